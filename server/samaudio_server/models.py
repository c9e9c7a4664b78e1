"""Where the served model comes from: a trained checkpoint, or an untrained preset for demos.

Both the server and the client's in-process paths (`samaudio separate --local`, `samaudio demo`) load models
here, so the thin client itself never imports torch.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def default_device(device: str | None = None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load(name_or_folder: str, device: str | None = None, dtype: str | None = None, **kwargs: Any):
    """A trained model (eval mode) and its processor from a hub id or a local folder."""
    from samaudio import SAMAudio, SAMAudioProcessor

    device = default_device(device)
    logger.info("loading %s on %s", name_or_folder, device)
    model = SAMAudio.from_pretrained(name_or_folder, device=device, dtype=dtype, **kwargs)
    return model, SAMAudioProcessor.from_pretrained(name_or_folder)


def build_untrained(preset: str, seed: int = 0, threads: int | None = None):
    """A model of the preset's size with random weights (untrained: its stems are not separations)."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = SAMAudio.from_config(get_preset(preset).build_config(), random_text_encoder=True)
    return model, SAMAudioProcessor(model.hop_length, model.sample_rate)
