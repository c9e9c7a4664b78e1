"""Models by name: `--model demo-tiny` builds the untrained preset, a shipped folder loads by its name, anything
else is a folder or hub id; listing names needs no torch."""

from __future__ import annotations

import subprocess
import sys

import torch

from samaudio.model import catalog


def test_a_preset_name_is_known_untrained_and_a_hub_id_is_not_a_preset():
    assert catalog.find("demo-tiny") == catalog.KnownModel("demo-tiny", False, None, catalog.find("demo-tiny").notes)
    assert catalog.find("facebook/sam-audio-small") is None  # a hub id goes to the hub, never to random weights
    assert "facebook/sam-audio-small (gated)" in catalog.find("sam-audio-small").notes


def test_the_same_preset_name_builds_the_same_weights_and_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)

    a, _ = catalog.load("demo-tiny", device="cpu")
    after = torch.rand(3)
    b, _ = catalog.load("demo-tiny", device="cpu")

    assert not a.training
    torch.testing.assert_close(after, expected_next, rtol=0, atol=0)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_a_shipped_model_is_listed_first_as_trained_and_loads_by_its_name(tmp_path, monkeypatch):
    model, _ = catalog.build_untrained("demo-tiny", seed=5)
    model.save_pretrained(tmp_path / "tiny-shipped")
    (tmp_path / "tiny-shipped" / "README.md").write_text("a tiny model for this test\n")
    monkeypatch.setattr(catalog, "SHIPPED_DIR", tmp_path)

    first = catalog.known_models()[0]
    loaded, processor = catalog.load("tiny-shipped", device="cpu")

    assert (first.name, first.trained, first.notes) == ("tiny-shipped", True, "a tiny model for this test")
    assert processor.audio_sampling_rate == model.sample_rate
    for (name, x), (_, y) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_listing_the_models_imports_no_torch():
    code = "import sys; from samaudio.model import catalog; catalog.describe(); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_shipped_model_takes_over_the_name_of_the_preset_it_was_trained_at(tmp_path, monkeypatch):
    model, _ = catalog.build_untrained("demo-tiny", seed=5)
    model.save_pretrained(tmp_path / "demo-tiny")
    monkeypatch.setattr(catalog, "SHIPPED_DIR", tmp_path)

    listed = [m for m in catalog.known_models() if m.name == "demo-tiny"]
    loaded, _ = catalog.load("demo-tiny", device="cpu", seed=0)  # seed 0 would build other random weights

    assert [m.trained for m in listed] == [True]
    for (name, x), (_, y) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
