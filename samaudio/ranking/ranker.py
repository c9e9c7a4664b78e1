"""The ranker interface and the ensemble, as the official `sam_audio/ranking/ranker.py`.

Legend: B batch items, K candidates per item, L samples at 48 kHz.

A ranker scores K candidate separations of each of B items: `forward(**kwargs)` returns (B, K), higher is
better (ImageBind returns (B, K, 1), as officially). Every ranker takes the same keyword arguments and ignores
those it does not use, so one call serves them all:
    extracted_audio  list of B tensors (K, L_b): the candidates' target stems
    input_audio      list of B tensors (K, L_b): the mixture, repeated per candidate
    descriptions     list of B strings
    videos           list of B masked videos (F, 3, H, W), 0-255
    sample_rate      of the audio (48000 inside SAMAudio.separate)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from samaudio.model.hub import check_state_dict



class Ranker(nn.Module):
    """Scores (B, K) for K candidates of B items; subclasses implement `forward(**kwargs)`."""

    def forward(self, **kwargs: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class EnsembleRanker(Ranker):
    """`sum_i w_i * ranker_i(**kwargs)` with the raw config weights, members in config order."""

    def __init__(self, rankers: dict[str, Ranker], weights: dict[str, float]):
        super().__init__()
        self.rankers = nn.ModuleDict(rankers)
        self.weights = dict(weights)

    def forward(self, **kwargs: Any) -> torch.Tensor:
        total = None
        for name, ranker in self.rankers.items():
            score = self.weights[name] * ranker(**kwargs)
            total = score if total is None else total + score
        return total


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module` after comparing key sets and shapes: every problem in one CheckpointError.

    The official rankers load with a bare `load_state_dict`, which fails deep inside torch with a wall of keys:
    this names the first few of each kind and the file before anything loads.
    """
    check_state_dict(
        state,
        module.state_dict(),
        f"{source} ({type(module).__name__})",
        "Is the config beside it the one saved with these weights?",
    )
    module.load_state_dict(state, strict=True)
