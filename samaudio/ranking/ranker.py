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

import logging
from typing import Any

import torch
import torch.nn as nn

from samaudio.errors import CheckpointError

logger = logging.getLogger(__name__)


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
    """Load `state` into `module` after comparing key sets and shapes; every problem in one CheckpointError.

    The official rankers load with a bare `load_state_dict`, which fails deep inside torch with a wall of keys
    (or, for the judge, crashes on the first mismatched shape): this names the first few of each kind and the file.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es), first {'; '.join(wrong[:3])}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the {type(module).__name__} built from its config: " + " | ".join(problems)
            + ". Is the config the one saved with these weights?"
        )
    module.load_state_dict(state, strict=True)
