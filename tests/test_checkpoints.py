"""Loading official checkpoints and our own folders: checked key maps, clear errors, presets as data."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from samaudio import SAMAudio
from samaudio.errors import CheckpointError, ConfigError, ModelUnavailableError
from samaudio.model.config import SAMAudioConfig, get_preset, preset_names

SKIPPED_BY_OFFICIAL_CHECKPOINTS = ("text_encoder.", "visual_ranker.", "text_ranker.", "span_predictor.")


def write_official_folder(golden_dir, folder, mutate=None, text_encoder=None):
    """config.json + checkpoint.pt (torch.save of the state_dict without text encoder) + the T5 beside it."""
    folder.mkdir()
    shutil.copy(golden_dir / "config.json", folder / "config.json")
    if text_encoder is None:
        shutil.copytree(golden_dir / "t5", folder / "t5")
    else:
        text_encoder.save_pretrained(folder / "t5")
    state = {k: v for k, v in load_file(str(golden_dir / "model.safetensors")).items() if not k.startswith(SKIPPED_BY_OFFICIAL_CHECKPOINTS)}
    if mutate:
        mutate(state)
    torch.save(state, folder / "checkpoint.pt")
    return folder


def one_step(model, golden):
    tensors, meta = golden("e2e_anchor")
    from samaudio import SAMAudioProcessor

    processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
    batch = processor(descriptions=meta["descriptions"], audios=[tensors["audio_in_0"]], anchors=meta["anchors"])
    return model.separate(
        batch, noise=tensors["noise"], ode_opt={"method": "euler", "options": {"step_size": 1.0}},
        watermark_message=tensors["wm_message"],
    )


def test_official_checkpoint_pt_loads_and_matches_the_safetensors_folder(golden_dir, golden_model, golden, tmp_path):
    # the T5 comes from its own folder, as t5-base does for real checkpoints
    folder = write_official_folder(golden_dir, tmp_path / "official", text_encoder=golden_model.text_encoder)
    model = SAMAudio.from_pretrained(folder)
    a, b = one_step(model, golden), one_step(golden_model, golden)
    assert torch.equal(a.target[0], b.target[0]) and torch.equal(a.residual[0], b.residual[0])


def test_save_pretrained_round_trips_offline(golden_model, golden, tmp_path):
    golden_model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["text_encoder"]["name"] == "t5"
    model = SAMAudio.from_pretrained(tmp_path / "saved")
    a, b = one_step(model, golden), one_step(golden_model, golden)
    assert torch.equal(a.target[0], b.target[0])


def test_missing_key_is_named(golden_dir, tmp_path):
    folder = write_official_folder(golden_dir, tmp_path / "m", mutate=lambda s: s.pop("proj.bias"))
    with pytest.raises(CheckpointError, match=r"missing key.*proj\.bias"):
        SAMAudio.from_pretrained(folder)


def test_unexpected_key_is_named(golden_dir, tmp_path):
    folder = write_official_folder(golden_dir, tmp_path / "u", mutate=lambda s: s.update({"extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected key.*extra\.weight"):
        SAMAudio.from_pretrained(folder)


def test_wrong_shape_is_named_with_both_shapes(golden_dir, tmp_path):
    def widen(state):
        state["memory_proj.bias"] = torch.zeros(state["memory_proj.bias"].shape[0] + 1)

    folder = write_official_folder(golden_dir, tmp_path / "w", mutate=widen)
    with pytest.raises(CheckpointError, match=r"memory_proj\.bias: checkpoint \(\d+,\) vs config \(\d+,\)"):
        SAMAudio.from_pretrained(folder)


def test_corrupt_checkpoint_file_is_a_checkpoint_error(golden_dir, tmp_path):
    folder = write_official_folder(golden_dir, tmp_path / "c")
    data = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        SAMAudio.from_pretrained(folder)


def test_folder_without_weights_is_a_checkpoint_error(golden_dir, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(golden_dir / "config.json", folder / "config.json")
    shutil.copytree(golden_dir / "t5", folder / "t5")
    with pytest.raises(CheckpointError, match="holds no weights"):
        SAMAudio.from_pretrained(folder)


def test_unknown_config_key_is_named(golden_dir, tmp_path):
    fields = json.loads((golden_dir / "config.json").read_text())
    fields["transformer"]["n_haeds"] = 4
    with pytest.raises(ConfigError, match="n_haeds"):
        SAMAudioConfig.from_dict(fields)


def test_offline_hub_model_says_how_to_get_access(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="request access"):
        SAMAudio.from_pretrained("facebook/sam-audio-small")


def _leaves(fields: dict, prefix: str = ""):
    """("a.b", value) for every value of a nested dict of config fields."""
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_every_preset_builds_a_config_carrying_each_of_its_values():
    # building runs the config's own validation (sizes that must fit together); this checks the preset's data
    # reach the config, none dropped or overridden by a default
    assert {"sam-audio-small", "sam-audio-base", "sam-audio-large", "demo-tiny"} <= set(preset_names())
    for name in preset_names():
        preset = get_preset(name)
        config = preset.build_config()
        for path, value in _leaves(preset.config):
            got = config
            for part in path.split("."):
                got = got[part] if isinstance(got, dict) else getattr(got, part)
            assert got == value, (name, path, got, value)


def test_presets_say_which_sizes_are_not_known():
    assert get_preset("sam-audio-large").unknown == {}
    assert "transformer.n_heads" in get_preset("facebook/sam-audio-small").unknown


def test_demo_preset_builds_an_untrained_model_without_any_download():
    model = SAMAudio.from_config(get_preset("demo-tiny").build_config(), random_text_encoder=True)
    features, mask = model.encode_text(["a dog barking", ""])
    assert features.shape[0] == 2 and mask.dtype == torch.bool
