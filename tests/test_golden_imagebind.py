"""ImageBindRanker (our audio + vision towers) reproduces the official ranker's inputs, embeddings and scores.

Case from SAMAUDIO_GOLDEN: `imagebind/` (checkpoint.pth, config.json) and `imagebind.safetensors`.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from samaudio.errors import CheckpointError
from samaudio.ranking import create_ranker
from samaudio.ranking.imagebind import AUDIO_CLIPS, AUDIO_RATE, VIDEO_CLIPS, ImageBindRanker, audio_clips, clip_times

ATOL = RTOL = 1e-4


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=RTOL)


@pytest.fixture(scope="module")
def ranker(golden_dir) -> ImageBindRanker:
    return create_ranker({"kind": "imagebind", "checkpoint": "imagebind/checkpoint.pth"}, root=golden_dir)


@pytest.fixture(scope="module")
def case(golden):
    tensors, meta = golden("imagebind")
    B = tensors["scores"].shape[0]
    return tensors, meta, [tensors[f"audio_{b}"] for b in range(B)], [tensors[f"video_{b}"] for b in range(B)]


@pytest.fixture(scope="module")
def prepared(ranker, case):
    tensors, meta, audios, videos = case
    return ranker.prepare(audios, videos, meta["sample_rate"])


def test_clip_times_are_the_samplers_fractions(case):
    _, meta, audios, _ = case
    for b, audio in enumerate(audios):
        duration = audio.shape[-1] / meta["sample_rate"]
        for clips, key in ((AUDIO_CLIPS, "audio_clip_times_s"), (VIDEO_CLIPS, "video_clip_times_s")):
            times = [[float(s), float(e)] for s, e in clip_times(duration, clips)]
            assert times == meta[key][b]


def test_imagebind_audio_input_matches(prepared, case):
    close(prepared[0], case[0]["audio_data"])


def test_imagebind_video_views_match(prepared, case):
    tensors = case[0]
    video = prepared[1]
    p = tensors["video_view0_patch"].shape[-1]
    assert video.shape[1:3] == (3 * VIDEO_CLIPS, 3)
    close(video[:, 0, :, :, 96 : 96 + p, 96 : 96 + p], tensors["video_view0_patch"])
    views = video.double().flatten(2)
    sums, sumsq = tensors["video_data_sum"], tensors["video_data_sumsq"]
    torch.testing.assert_close(views.sum(-1), sums, atol=1e-6 * sums.abs().max().item(), rtol=0)
    torch.testing.assert_close(views.pow(2).sum(-1), sumsq, atol=1e-6 * sumsq.abs().max().item(), rtol=0)


def test_imagebind_embeddings_match(ranker, prepared, case):
    tensors = case[0]
    with torch.inference_mode():
        close(ranker.model.embed("audio", tensors["audio_data"]), tensors["emb_audio"])
        close(ranker.model.embed("vision", prepared[1]), tensors["emb_vision"])


def test_imagebind_scores_match_with_the_official_b_k_1_shape(ranker, case):
    tensors, meta, audios, videos = case
    before = [a.clone() for a in audios]
    scores = ranker(extracted_audio=audios, videos=videos, sample_rate=meta["sample_rate"], descriptions=["x"])
    assert scores.shape == tensors["scores"].shape == (len(audios), audios[0].shape[0], 1)
    close(scores, tensors["scores"])
    assert all(torch.equal(a, b) for a, b in zip(audios, before))  # the in-place mean subtraction works on a copy


def test_audio_clips_subtract_each_clip_mean_in_place_on_the_shared_waveform():
    # 2.2 s: the three 2-s clips overlap, so clip 1 sees samples clip 0 already centred (ImageBind's quirk)
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(round(2.2 * AUDIO_RATE), generator=g) * 0.1 + torch.linspace(0, 4, round(2.2 * AUDIO_RATE))
    shared = audio_clips(wav, AUDIO_RATE)
    on_copies = []
    for start, end in clip_times(wav.shape[0] / AUDIO_RATE, AUDIO_CLIPS):
        alone = wav.clone()
        on_copies.append(audio_clips(alone[int(start * AUDIO_RATE) : int(end * AUDIO_RATE)], AUDIO_RATE)[0])
    torch.testing.assert_close(shared[0], on_copies[0])  # the first clip sees no earlier subtraction
    assert (shared[1] - on_copies[1]).abs().max() > 1e-3


def test_imagebind_config_that_does_not_fit_its_weights_is_one_checkpoint_error(golden_dir, tmp_path):
    folder = tmp_path / "imagebind"
    shutil.copytree(golden_dir / "imagebind", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["imagebind_model_kwargs"]["audio_num_blocks"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing key.*modality_trunks\.audio\.blocks\.\d+\.attn"):
        create_ranker({"kind": "imagebind", "checkpoint": str(folder / "checkpoint.pth")})
