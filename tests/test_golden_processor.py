"""The processor against the official one: the golden e2e files' `batch_*` tensors, rebuilt from their inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from samaudio.processor import Batch, SAMAudioProcessor

E2E = ["e2e_anchor", "e2e_text", "e2e_batch"]
BATCH_DTYPES = {
    "sizes": torch.float32,
    "wav_sizes": torch.int64,
    "audio_pad_mask": torch.bool,
    "anchor_ids": torch.int64,
    "anchor_alignment": torch.int64,
}


def _inputs(tensors: dict) -> list[torch.Tensor]:
    return [tensors[f"audio_in_{i}"] for i in range(len(tensors["batch_wav_sizes"]))]


@pytest.fixture(scope="module")
def processor(golden_dir) -> SAMAudioProcessor:
    return SAMAudioProcessor.from_pretrained(golden_dir)


def test_golden_processor_from_pretrained_reads_hop_and_rate_from_config(processor):
    assert (processor.audio_hop_length, processor.audio_sampling_rate) == (1920, 48000)


@pytest.mark.parametrize("case", E2E)
def test_golden_processor_batch_tensors_equal_official(processor, golden, case):
    tensors, meta = golden(case)
    batch = processor(meta["descriptions"], _inputs(tensors), anchors=meta["anchors"])
    for name, dtype in BATCH_DTYPES.items():
        got, want = getattr(batch, name), tensors[f"batch_{name}"]
        assert got.dtype == want.dtype == dtype, name
        assert torch.equal(got, want), name


@pytest.mark.parametrize("case", E2E)
def test_golden_processor_audios_are_the_zero_padded_channel_means(processor, golden, case):
    tensors, meta = golden(case)
    inputs = _inputs(tensors)
    batch = processor(meta["descriptions"], inputs, anchors=meta["anchors"])
    lmax = max(x.shape[-1] for x in inputs)
    assert batch.audios.shape == (len(inputs), 1, lmax)
    for i, x in enumerate(inputs):
        assert torch.equal(batch.audios[i, 0, : x.shape[-1]], x.mean(0))
        assert not batch.audios[i, 0, x.shape[-1] :].any()
    assert batch.descriptions == meta["descriptions"]
    assert batch.anchors == meta["anchors"]
    assert batch.masked_video is None
    assert (batch.hop_length, batch.audio_sampling_rate) == (1920, 48000)


def test_golden_processor_callers_tensors_stay_untouched(processor, golden):
    tensors, meta = golden("e2e_batch")
    inputs = _inputs(tensors)
    copies = [x.clone() for x in inputs]
    processor(meta["descriptions"], inputs, anchors=meta["anchors"])
    assert all(torch.equal(x, c) for x, c in zip(inputs, copies))


def test_processor_file_path_is_resampled_then_averaged(tmp_path):
    rate, n = 44100, 4410 + 37
    data = np.random.default_rng(0).uniform(-0.5, 0.5, size=(n, 2)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    batch = SAMAudioProcessor()(["dog"], [str(path)])
    want = AF.resample(torch.from_numpy(data.T.copy()), rate, 48000).mean(0)  # (L,)
    assert batch.wav_sizes.tolist() == [want.shape[0]]
    assert torch.equal(batch.audios[0, 0], want)


def test_processor_accepts_a_pathlib_path(tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, np.zeros(2000, dtype=np.float32), 48000, subtype="FLOAT")
    assert SAMAudioProcessor()([""], [path]).wav_sizes.tolist() == [2000]


def test_processor_no_anchors_give_null_and_pad_ids_with_pad_slot_on_padded_frames():
    batch = SAMAudioProcessor()(["a", "b"], [torch.zeros(1, 1920 * 3), torch.zeros(2, 1920 + 5)])
    assert batch.anchor_ids.tolist() == [[0, 3], [0, 3]]
    assert batch.sizes.tolist() == [3.0, 2.0]
    assert batch.anchor_alignment.tolist() == [[0, 0, 0], [0, 0, 1]]


def test_processor_anchor_frames_are_ceil_of_python_float_times():
    hop, sr = 1920, 48000
    start, end = 0.3, 0.9
    batch = SAMAudioProcessor()(["a"], [torch.zeros(1, sr)], anchors=[[("+", start, end)]])
    s, e = math.ceil(start * sr / hop), math.ceil(end * sr / hop)
    row = batch.anchor_alignment[0]
    assert (row[s:e] == 2).all() and (row[:s] == 0).all() and (row[e:] == 0).all()


def test_processor_later_anchor_overwrites_earlier_and_padded_frames():
    # Item 1 is 10 frames long in a 25-frame batch; its second anchor runs past its end.
    batch = SAMAudioProcessor()(
        ["a", "b"],
        [torch.zeros(1, 48000), torch.zeros(1, 1920 * 10)],
        anchors=[[], [("+", 0.0, 0.2), ("-", 0.12, 0.6)]],
    )
    assert batch.anchor_ids.tolist() == [[0, 3, 3, 3], [0, 3, 1, 2]]
    assert batch.anchor_alignment[1].tolist() == [2, 2, 2] + [3] * 12 + [1] * 10


def test_processor_empty_anchor_list_means_no_prompt():
    batch = SAMAudioProcessor()(["a"], [torch.zeros(1, 4000)], anchors=[[]])
    assert batch.anchor_ids.tolist() == [[0, 3]]
    assert not batch.anchor_alignment.any()


def test_processor_masked_video_tensor_gets_one_frame_per_latent_frame():
    video = torch.arange(5, dtype=torch.uint8)[:, None, None, None].expand(5, 3, 4, 4)  # frame k filled with k
    batch = SAMAudioProcessor()(["a"], [torch.zeros(1, 1920 * 8)], masked_videos=[video])
    (frames,) = batch.masked_video
    assert frames.shape == (8, 3, 4, 4)
    want = torch.linspace(0, 4, 8).round().to(torch.uint8)  # evenly spread, half to even
    assert torch.equal(frames[:, 0, 0, 0], want)


def test_processor_mask_videos_blacks_out_masked_pixels():
    video = torch.full((2, 3, 2, 2), 7, dtype=torch.uint8)
    mask = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], dtype=torch.bool)[:, None]  # (N, 1, H, W)
    (out,) = SAMAudioProcessor().mask_videos([video], [mask])
    assert out.dtype == torch.uint8
    assert torch.equal(out, video * ~mask)


def test_processor_index_conversions():
    p = SAMAudioProcessor(1920, 48000)
    assert p.wav_to_feature_idx(1921) == 2
    assert torch.equal(p.wav_to_feature_idx(torch.tensor([1920, 1921])), torch.tensor([1.0, 2.0]))
    assert p.feature_to_wav_idx(3) == 5760


def test_batch_to_moves_every_tensor_and_returns_itself(golden, processor):
    tensors, meta = golden("e2e_batch")
    batch = processor(meta["descriptions"], _inputs(tensors), anchors=meta["anchors"])
    moved = batch.to("meta")
    assert moved is batch
    for name in ("audios", "sizes", "wav_sizes", "audio_pad_mask", "anchor_ids", "anchor_alignment"):
        assert getattr(batch, name).device.type == "meta", name


def test_batch_built_directly_processes_its_anchors():
    sizes = torch.tensor([3.0])
    batch = Batch(torch.zeros(1, 1, 5760), sizes, torch.tensor([5760]), ["a"], 1920, 48000, anchors=[[("-", 0, 0.05)]])
    assert batch.anchor_ids.tolist() == [[0, 3, 2]]
    assert batch.anchor_alignment.tolist() == [[2, 2, 0]]


def test_processor_anchor_past_the_item_end_marks_padded_frames_and_is_logged(caplog):
    # As the official processor: kept, marking the item's padded frames; a warning says it covers no real frame.
    batch = SAMAudioProcessor()(
        ["a", "b"], [torch.zeros(1, 1920 * 4), torch.zeros(1, 1920 * 2)], anchors=[[], [("+", 0.1, 0.2)]]
    )
    assert batch.anchor_alignment[1].tolist() == [0, 0, 1, 2]  # frames ceil(2.5)=3 to 5, clipped to T=4
    assert "covers no frame" in caplog.text
