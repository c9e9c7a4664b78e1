"""Where the served model comes from: a name, folder or hub id resolved by the library's catalog.

Both the server and the client's in-process paths (`samaudio separate --local`, `samaudio demo`) load models
here, so the thin client itself never imports torch.
"""

from __future__ import annotations

from typing import Any

from samaudio.model import catalog


def load(name_or_folder: str, device: str | None = None, dtype: str | None = None, **kwargs: Any):
    """The model (eval mode) and its processor: a shipped model or preset by name, a local folder or a hub id."""
    return catalog.load(name_or_folder, device=device, dtype=dtype, **kwargs)


def build_untrained(preset: str, seed: int = 0, threads: int | None = None):
    """A model of the preset's size with random weights (untrained: its stems are not separations)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return catalog.build_untrained(preset, seed=seed)
