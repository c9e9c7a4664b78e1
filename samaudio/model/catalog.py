"""The models samaudio knows by name, and the one place a `--model` value becomes a model.

A value names, in this order:
- a shipped model: trained weights that come with samaudio, a folder `samaudio/shipped/<name>/` holding what
  `SAMAudio.save_pretrained` writes (`config.json`, `model.safetensors`); loaded with no download;
- a preset (`samaudio/presets/<name>.json`, e.g. `demo-tiny`): the size as data, built with random weights, so
  UNTRAINED: its stems show that a path works, not a separation. The same name and seed give the same weights
  in every process, so a server and `--local` started with `demo-tiny` separate alike;
- otherwise a local folder or a Hugging Face hub id (`facebook/sam-audio-small`, gated), as `from_pretrained`.

Listing and resolving names imports no torch (the thin client's `samaudio models` uses them); `load` does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samaudio.model.config import get_preset, preset_names

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"


@dataclass(frozen=True)
class KnownModel:
    """A model known by its name alone."""

    name: str
    trained: bool  # False: a preset built with random weights
    folder: Path | None  # a shipped model's weights; None for a preset
    notes: str  # one line for listings


def shipped_names() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def known_models() -> list[KnownModel]:
    """Shipped (trained) models first, then the presets (untrained) that no shipped model's name shadows."""
    models, shipped = [], shipped_names()
    for name in shipped:
        folder = SHIPPED_DIR / name
        notes_file = folder / "README.md"
        notes = "trained, ships with samaudio"
        if notes_file.is_file():
            notes = notes_file.read_text().strip().splitlines()[0]
        models.append(KnownModel(name, True, folder, notes))
    for name in preset_names():
        if name in shipped:
            continue  # the size a shipped model was trained at: the name means the trained weights
        preset = get_preset(name)
        where = f"real weights: {preset.hub_id} (gated)" if preset.hub_id else "not an official size: demos, tests"
        models.append(KnownModel(name, False, None, f"random weights at this size, no download; {where}"))
    return models


def find(name: str) -> KnownModel | None:
    """The known model `name` exactly (a hub id like `facebook/sam-audio-small` is not a preset name)."""
    return next((m for m in known_models() if m.name == name), None)


def load(
    name: str, device: str | None = None, dtype: str | None = None, *, vision: bool = False, seed: int = 0,
    **parts: Any,
) -> tuple[Any, Any]:
    """The model (eval mode, on `device`, default cuda when there is one) and its processor for a `--model` value:
    a shipped model, a preset (built with random weights from `seed`), a local folder or a hub id. `parts`
    (`text_ranker=`, `visual_ranker=`, `span_predictor=`) go to `SAMAudio.from_pretrained`; a preset has none."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    known = find(name)
    if known is not None and not known.trained:
        logger.warning("%s is a preset: the model is UNTRAINED (random weights, seed %d)", name, seed)
        model, processor = build_untrained(name, seed=seed, vision=vision)
        return model.to(device=device, dtype=getattr(torch, dtype) if dtype else None), processor
    source = str(known.folder) if known is not None else name
    logger.info("loading %s on %s", name, device)
    model = SAMAudio.from_pretrained(source, device=device, dtype=dtype, vision=vision, **parts)
    return model, SAMAudioProcessor.from_pretrained(source)


def build_untrained(preset: str, seed: int = 0, *, vision: bool = False) -> tuple[Any, Any]:
    """A model of the preset's size with random weights from `seed` (untrained), on the CPU, and its processor."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor

    with torch.random.fork_rng(devices=[]):  # the same weights for the same seed, the caller's RNG untouched
        torch.manual_seed(seed)
        config = get_preset(preset).build_config()
        model = SAMAudio.from_config(config, random_text_encoder=True, vision=vision)
    return model, SAMAudioProcessor(model.hop_length, model.sample_rate)


def describe() -> str:
    """The known models as lines of text, for listings."""
    rows = [(m.name, "trained" if m.trained else "untrained", m.notes) for m in known_models()]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {kind:<9}  {notes}" for name, kind, notes in rows)


def as_json() -> str:
    return json.dumps(
        [{"name": m.name, "trained": m.trained, "notes": m.notes} for m in known_models()], indent=2
    )
