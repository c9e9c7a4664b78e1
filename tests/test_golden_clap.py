"""ClapRanker (our LAION-CLAP: HTSAT + RoBERTa) reproduces the official ranker's scores and intermediates.

Case from SAMAUDIO_GOLDEN: `clap/` (the released 630k-best.pt layout at tiny sizes) and `clap.safetensors`.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from samaudio.errors import CheckpointError
from samaudio.ranking import create_ranker
from samaudio.ranking.clap import ClapRanker, fit_clip, quantize_int16

ATOL = RTOL = 1e-4  # embeddings, scores, features (golden README)


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=RTOL)


@pytest.fixture(scope="module")
def clap(golden_dir) -> ClapRanker:
    return create_ranker({"kind": "clap", "checkpoint": "clap/checkpoint.pt"}, root=golden_dir)


@pytest.fixture(scope="module")
def case(golden):
    tensors, meta = golden("clap")
    n = len(meta["descriptions"])
    return tensors, meta, [tensors[f"audio_{i}"] for i in range(n)]


@pytest.fixture(scope="module")
def prepared(clap, case):
    tensors, meta, audios = case
    return clap.prepare_audio(audios, meta["sample_rate"])


def test_clap_prepared_waveforms_match_the_int16_round_trip_and_repeat_pad(prepared, case):
    tensors, _, _ = case
    w = tensors["waveform_head"].shape[-1]
    assert prepared.shape == (tensors["waveform_sum"].shape[0], 480000)
    torch.testing.assert_close(prepared[:, :w], tensors["waveform_head"], atol=0, rtol=0)
    torch.testing.assert_close(prepared[:, -w:], tensors["waveform_tail"], atol=0, rtol=0)
    torch.testing.assert_close(prepared.double().sum(-1), tensors["waveform_sum"], atol=1e-6, rtol=0)


def test_clap_tokens_match(clap, case):
    tensors, meta, _ = case
    tokens = clap.tokenize(meta["descriptions"])
    assert torch.equal(tokens["input_ids"], tensors["input_ids"])
    assert torch.equal(tokens["attention_mask"], tensors["attention_mask"])


def test_clap_logmel_and_htsat_embedding_match(clap, prepared, case):
    tensors, _, _ = case
    with torch.inference_mode():
        close(clap.model.audio_branch.logmel(prepared), tensors["logmel"])
        close(clap.model.audio_branch(prepared), tensors["htsat_embedding"])
        close(clap.model.audio_embedding(prepared), tensors["audio_embeds"])


def test_clap_text_pooler_and_embedding_match(clap, case):
    tensors, meta, _ = case
    tokens = clap.tokenize(meta["descriptions"])
    with torch.inference_mode():
        close(clap.model.text_branch(**tokens).pooler_output, tensors["text_pooler"])
        close(clap.model.text_embedding(**tokens), tensors["text_embeds"])


def test_clap_ranker_scores_match_and_leave_the_inputs_untouched(clap, case):
    tensors, meta, audios = case
    before = [a.clone() for a in audios]
    scores = clap(extracted_audio=audios, descriptions=meta["descriptions"], sample_rate=meta["sample_rate"],
                  videos=None, unknown_keyword=1)
    assert scores.shape == tensors["scores"].shape
    close(scores, tensors["scores"])
    assert all(torch.equal(a, b) for a, b in zip(audios, before))


def test_quantize_int16_clamps_and_truncates_toward_zero():
    x = torch.tensor([2.0, -3.0, 0.5 / 32767, -1.5 / 32767, 100.7 / 32767])
    expected = torch.tensor([32767, -32767, 0, -1, 100]) / 32767.0
    torch.testing.assert_close(quantize_int16(x), expected, atol=0, rtol=0)


def test_fit_clip_repeats_whole_copies_then_zero_pads():
    wav = torch.arange(1, 8, dtype=torch.float32)  # 7 samples into 20: two whole copies, then 6 zeros
    out = fit_clip(wav, 20)
    torch.testing.assert_close(out, torch.cat([wav, wav, torch.zeros(6)]), atol=0, rtol=0)


def test_fit_clip_cuts_a_longer_clip_to_one_random_window():
    wav = torch.arange(100, dtype=torch.float32)
    starts = {int(fit_clip(wav, 30, generator=torch.Generator().manual_seed(s))[0]) for s in range(20)}
    out = fit_clip(wav, 30, generator=torch.Generator().manual_seed(0))
    assert out.shape == (30,) and torch.equal(out, torch.arange(out[0], out[0] + 30, dtype=torch.float32))
    assert len(starts) > 1 and max(starts) <= 70


def test_clap_config_that_does_not_fit_its_weights_is_one_checkpoint_error_naming_keys(golden_dir, tmp_path):
    folder = tmp_path / "clap"
    shutil.copytree(golden_dir / "clap", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_cfg"]["joint_embed_shape"] += 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"16 shape mismatch.*text_projection\.0\.weight: checkpoint"):
        create_ranker({"kind": "clap", "checkpoint": str(folder / "checkpoint.pt")})
