"""The SAM-Audio Judge and its processor reproduce the official outputs (golden `judge/`, `judge.safetensors`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

ATOL = RTOL = 1e-4  # scores (golden README)
INTERMEDIATE_ATOL = 5e-4  # data_proj's gain amplifies the codec latent's rounding in these four (golden README)
LOOSE = ("transformer_out", "audio_features", "audio_and_text", "finetune_out")
# module whose output is each stored intermediate
HOOKS = {
    "codec_features": "audio_codec",
    "transformer_out": "transformer",
    "text_features": "text_proj1",
    "text_ln": "layer_norm",
    "audio_features": "cat_audio_proj",
    "audio_and_text": "proj_audio_and_text",
    "finetune_out": "finetune_transformer",
    "head_out": "head",
}
SCORES = ("overall", "recall", "precision", "faithfulness")


@pytest.fixture(scope="module")
def judge_dir(golden_dir):
    return golden_dir / "judge"


@pytest.fixture(scope="module")
def judge(judge_dir):
    from samaudio.model.judge import SAMAudioJudgeModel

    return SAMAudioJudgeModel.from_pretrained(judge_dir)


@pytest.fixture(scope="module")
def judge_inputs(judge_dir, golden):
    from samaudio.model.judge import SAMAudioJudgeProcessor

    tensors, meta = golden("judge")
    n = len(meta["descriptions"])
    processor = SAMAudioJudgeProcessor.from_pretrained(judge_dir)
    return processor(
        meta["descriptions"],
        input_audio=[tensors[f"input_audio_{i}"] for i in range(n)],
        separated_audio=[tensors[f"separated_audio_{i}"] for i in range(n)],
        sampling_rate=meta["sample_rate"],
    )


@pytest.fixture(scope="module")
def judge_run(judge, judge_inputs):
    """One forward pass with every intermediate captured by forward hooks (removed afterwards)."""
    captured = {}
    handles = []
    for name, module in HOOKS.items():

        def hook(mod, args, out, name=name):
            captured[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        handles.append(getattr(judge, module).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            out = judge(**judge_inputs)
    finally:
        for h in handles:
            h.remove()
    return out, captured


def test_judge_state_dict_matches_official_keys(judge, judge_dir):
    expected = []
    for line in (judge_dir / "keys.txt").read_text().splitlines():
        if line.strip():
            name, shape, dtype = line.split("\t")
            expected.append((name, json.loads(shape), dtype))
    actual = [(n, list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in judge.state_dict().items()]
    assert actual == expected


@pytest.mark.parametrize(
    "name", ["input_ids", "attention_mask", "input_values", "separated_values", "padding_mask"]
)
def test_judge_processor_matches_official_inputs_exactly(judge_inputs, golden, name):
    tensors, _ = golden("judge")
    assert judge_inputs[name].dtype == tensors[name].dtype
    assert torch.equal(judge_inputs[name], tensors[name])


@pytest.mark.parametrize("name", list(HOOKS))
def test_judge_intermediates_match(judge_run, golden, name):
    tensors, _ = golden("judge")
    atol = INTERMEDIATE_ATOL if name in LOOSE else ATOL
    torch.testing.assert_close(judge_run[1][name], tensors[name], atol=atol, rtol=RTOL)


@pytest.mark.parametrize("name", SCORES)
def test_judge_scores_match(judge_run, golden, name):
    tensors, _ = golden("judge")
    torch.testing.assert_close(getattr(judge_run[0], name), tensors[name], atol=ATOL, rtol=RTOL)


def test_judge_without_padding_mask_averages_every_frame(judge, judge_inputs, golden):
    tensors, _ = golden("judge")
    args = {k: v for k, v in judge_inputs.items() if k != "padding_mask"}
    with torch.inference_mode():
        out = judge(**args)
    torch.testing.assert_close(out.overall, tensors["overall_nomask"], atol=ATOL, rtol=RTOL)


def test_judge_loads_the_official_checkpoint_pt_like_the_safetensors(judge, judge_dir, judge_inputs, tmp_path):
    from samaudio.model.judge import SAMAudioJudgeModel

    folder = tmp_path / "judge"
    shutil.copytree(judge_dir, folder)
    (folder / "model.safetensors").unlink()  # leaves config.json + checkpoint.pt, the hub layout
    from_pt = SAMAudioJudgeModel.from_pretrained(folder)
    for (k, a), (k2, b) in zip(judge.state_dict().items(), from_pt.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def _write_judge_with_config(judge_dir, tmp_path, edit) -> "Path":  # noqa: F821
    folder = tmp_path / "judge"
    folder.mkdir(parents=True)
    for name in ("checkpoint.pt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(judge_dir / name, folder / name)
    config = json.loads((judge_dir / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_judge_config_with_wrong_widths_is_one_error_naming_the_keys(judge_dir, tmp_path):
    from samaudio.errors import CheckpointError
    from samaudio.model.judge import SAMAudioJudgeModel

    def widen(config):
        heads = config["finetune_transformer"].get("num_attention_heads", 8)
        config["finetune_transformer"]["hidden_size"] += 4 * heads  # still a whole number of heads
        config["bottleneck_dim"] += 2

    folder = _write_judge_with_config(judge_dir, tmp_path, widen)
    with pytest.raises(CheckpointError) as err:
        SAMAudioJudgeModel.from_pretrained(folder)
    message = str(err.value)
    assert "shape mismatch" in message
    assert "finetune_transformer.embeddings.cls_token" in message  # the first offending key, by name
    assert "config.json" in message


def test_judge_config_with_wrong_depth_names_missing_and_unexpected_keys(judge_dir, tmp_path):
    from samaudio.errors import CheckpointError
    from samaudio.model.judge import SAMAudioJudgeModel

    depth = json.loads((judge_dir / "config.json").read_text())["transformer"]["num_hidden_layers"]

    def deepen(config):
        config["transformer"]["num_hidden_layers"] = depth + 1

    with pytest.raises(CheckpointError, match=rf"missing key\(s\), first transformer\.layers\.{depth}\."):
        SAMAudioJudgeModel.from_pretrained(_write_judge_with_config(judge_dir, tmp_path, deepen))

    def shallow(config):
        config["transformer"]["num_hidden_layers"] = depth - 1

    with pytest.raises(CheckpointError, match=rf"unexpected key\(s\), first transformer\.layers\.{depth - 1}\."):
        SAMAudioJudgeModel.from_pretrained(_write_judge_with_config(judge_dir, tmp_path / "b", shallow))


def test_judge_config_with_an_unknown_key_is_a_config_error(judge_dir, tmp_path):
    from samaudio.errors import ConfigError
    from samaudio.model.judge import SAMAudioJudgeModel

    def typo(config):
        config["transformer"]["hiden_size"] = 32

    with pytest.raises(ConfigError, match="hiden_size"):
        SAMAudioJudgeModel.from_pretrained(_write_judge_with_config(judge_dir, tmp_path, typo))


def test_judge_processor_reflect_pads_each_row_and_masks_the_zero_padding(judge_dir):
    from samaudio.model.judge import SAMAudioJudgeProcessor

    processor = SAMAudioJudgeProcessor.from_pretrained(judge_dir)
    hop = processor.hop_length
    short = torch.randn(1, hop + 7)
    exact = torch.randn(1, 2 * hop + hop)  # already a multiple: no reflection
    out = processor(["a", "b"], input_audio=[short, exact], separated_audio=[short, exact])
    assert out["input_values"].shape == (2, 1, 3 * hop)
    assert out["padding_mask"][0].sum() == 2 * hop and out["padding_mask"][1].all()
    # the end of row 0 mirrors the samples before its last one, then zeros follow
    L = short.shape[-1]
    assert torch.equal(out["input_values"][0, 0, L : L + 5], short[0, L - 6 : L - 1].flip(0))
    assert not out["input_values"][0, 0, 2 * hop :].any()
    assert torch.equal(out["input_values"][1], exact)


def test_judge_processor_rejects_another_sample_rate_and_unpaired_rows(judge_dir):
    from samaudio.errors import InvalidAudioError, InvalidRequestError
    from samaudio.model.judge import SAMAudioJudgeProcessor

    processor = SAMAudioJudgeProcessor.from_pretrained(judge_dir)
    wav = torch.randn(1, 4000)
    with pytest.raises(InvalidAudioError, match="44100"):
        processor(["a"], [wav], [wav], sampling_rate=44100)
    with pytest.raises(InvalidRequestError, match="one of each per row"):
        processor(["a", "b"], [wav], [wav])


def test_judge_config_in_another_layout_says_which_revision_to_load(judge_dir, tmp_path):
    from samaudio.errors import ConfigError
    from samaudio.model.judge import SAMAudioJudgeModel

    def other_layout(config):
        config["dac_vae_encoder"] = config.pop("audio_codec")

    with pytest.raises(ConfigError, match="revision 'sam_audio'"):
        SAMAudioJudgeModel.from_pretrained(_write_judge_with_config(judge_dir, tmp_path, other_layout))


def test_judge_hub_id_offline_is_model_unavailable(monkeypatch):
    from samaudio.errors import ModelUnavailableError
    from samaudio.model.judge import JUDGE_ID, SAMAudioJudgeModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=JUDGE_ID):
        SAMAudioJudgeModel.from_pretrained(JUDGE_ID)
