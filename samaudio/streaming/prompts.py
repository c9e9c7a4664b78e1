"""Several sounds of one stream: the prompts, what a stream keeps per prompt, and the null-sum residual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from samaudio.errors import InvalidAnchorError, InvalidRequestError
from samaudio.processor import Anchor, FrameAnchor, anchor_frame
from samaudio.streaming.jobs import NoiseRows, StreamText, window_noise
from samaudio.streaming.noise import watermark_bits
from samaudio.streaming.plan import WindowPlan


@dataclass(frozen=True)
class Prompt:
    """One sound of a stream that separates several (`StreamingSeparator(prompts=...)`)."""

    description: str
    anchors: Sequence[Anchor] = ()  # (sign, start_seconds, end_seconds) in the stream's seconds
    seed: int | None = None  # None: the stream's seed


class PromptState:
    """What a stream keeps per prompt: anchors in absolute latent frames, seed, watermark, text, last noise."""

    def __init__(self, prompt: Prompt, seed: int, plan: WindowPlan):
        self.description = prompt.description
        self.anchors = check_anchors(prompt.anchors)
        self.seed = int(seed if prompt.seed is None else prompt.seed)
        # absolute latent frames of each anchor, by the processor's rule: windows clip these, in frames
        self.anchor_frames: list[FrameAnchor] = [
            (sign, anchor_frame(s, plan.sample_rate, plan.hop), anchor_frame(e, plan.sample_rate, plan.hop))
            for sign, s, e in self.anchors
        ]
        self.message = watermark_bits(self.seed)  # (2, 16)
        self.text = StreamText(self.description)  # encoded by the worker, on the first window
        # per candidate: (first frame, (W, 2C)) of the last window's noise
        self.noise: dict[int, NoiseRows] = {}

    def window_noise(self, first_frame: int, plan: WindowPlan, width: int, candidates: int) -> torch.Tensor:
        """The window's starting noise: (W, 2C) for one candidate, (K, W, 2C) for K; the rows kept for the next."""
        rows = []
        for c in range(candidates):
            noise = window_noise(self.seed, first_frame, plan, width, c, self.noise.get(c))  # (W, 2C)
            self.noise[c] = (first_frame, noise)
            rows.append(noise)
        return rows[0] if candidates == 1 else torch.stack(rows)  # (W, 2C) or (K, W, 2C)


NULL_SUM_GRID = 2.0**-23  # null-sum targets are rounded to the 24-bit PCM grid, so that input - targets is exact


def null_sum_residual(mix: np.ndarray, targets: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """(targets on the 24-bit grid, mix minus their sum): float32 stems that add back up to `mix`.

    Rounding the targets to multiples of 2^-23 (at most 6e-8 away, the resolution of a 24-bit file) makes the
    sum and the difference exact for a mix on that grid (every 16- and 24-bit source) while no stem or partial
    sum reaches twice full scale: then the targets plus the residual give the mix exactly, in float32 or
    float64, in any order. Other float mixes are met to within the residual's float32 rounding.
    """
    q = [np.rint(t.astype(np.float64) / NULL_SUM_GRID) * NULL_SUM_GRID for t in targets]  # exact in float64
    residual = mix.astype(np.float64) - np.sum(q, axis=0)  # exact for a mix on the grid
    return [t.astype(np.float32) for t in q], residual.astype(np.float32)


def check_sound(
    description: Any, anchors: Sequence[Anchor], *, video: bool = False, where: str | None = None
) -> None:
    """What may be separated, the one rule for the library, the server and the clients' early checks: a sound
    named by a description, marked present by a positive anchor (negative anchors alone say where it is not, never
    what it is), or (the one sound of a stream, `where` None) shown by a masked video. `anchors` are checked
    (sign, start, end) triples; `where` names a prompt of several ("prompts[1]"); a named error otherwise."""
    field = "description" if where is None else f"{where}.description"
    if not isinstance(description, str):
        raise InvalidRequestError(f"{field} is a {type(description).__name__}: give a str")
    if description.strip() or any(sign == "+" for sign, _, _ in anchors) or video:
        return
    said = (
        "the description is empty and no anchor marks the sound present"
        if where is None
        else f"{where} has an empty description and no anchor marking the sound present"
    )
    raise InvalidRequestError(
        f"{said}: describe the sound to separate (e.g. 'vocals'), mark where it sounds with a positive anchor"
        + (", or give a masked video" if where is None else "")
    )


def check_anchors(anchors: Any) -> list[Anchor]:
    if isinstance(anchors, (str, bytes)) or not isinstance(anchors, Sequence):
        raise InvalidAnchorError(
            f"anchors must be a list of (sign, start_seconds, end_seconds) triples, got {type(anchors).__name__}"
        )
    from samaudio.processor import _check_anchor  # one rule, and one wording, for anchors everywhere

    return [_check_anchor(anchor, f"anchors[{k}]") for k, anchor in enumerate(anchors)]

