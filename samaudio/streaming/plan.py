"""The window plan: where a stream's windows sit on the latent grid, how they are weighted, and frame times.

Legend: W / V / S window / overlap / stride in latent frames, H hop (samples per latent frame at 48 kHz).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WindowPlan:
    """Windows of `frames` latent frames every `stride` frames, from frame 0, at the model's rate."""

    frames: int  # W: latent frames per window
    overlap: int  # V: latent frames shared by neighbouring windows
    hop: int  # H: samples per latent frame at the model's rate (1920)
    sample_rate: int  # the model's rate (48000)

    @property
    def stride(self) -> int:  # S
        return self.frames - self.overlap

    @property
    def samples(self) -> int:
        """Samples per window at the model's rate."""
        return self.frames * self.hop

    def start(self, k: int) -> int:
        """First sample of window k at the model's rate."""
        return k * self.stride * self.hop

    def needed(self, k: int, length: int) -> bool:
        """Whether window k is needed to cover `length` samples (the first always is, if there are any)."""
        if k == 0:
            return length > 0
        return self.start(k - 1) + self.samples < length

    def count(self, length: int) -> int:
        """Windows needed to cover `length` samples at the model's rate."""
        if length <= 0:
            return 0
        return 1 + max(0, -(-(length - self.samples) // (self.stride * self.hop)))

    @functools.cached_property
    def _fade_in(self) -> torch.Tensor:
        n = self.overlap * self.hop
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return torch.sin(0.5 * math.pi * t).pow(2).float()  # (V*H,) rises from ~0 to ~1; flipped it is cos^2

    def weights(self, k: int) -> torch.Tensor:
        """Overlap-add weights of window k: (W*H,) in (0, 1]; neighbours' weights sum to one over an overlap.

        Read-only: every window but the first shares one tensor.
        """
        return self._weights_first if k == 0 else self._weights_rest

    def _make_weights(self, first: bool) -> torch.Tensor:
        w = torch.ones(self.samples)
        n = self.overlap * self.hop
        if n:
            if not first:
                w[:n] *= self._fade_in
            w[-n:] *= self._fade_in.flip(0)
        return w

    @functools.cached_property
    def _weights_first(self) -> torch.Tensor:
        return self._make_weights(first=True)

    @functools.cached_property
    def _weights_rest(self) -> torch.Tensor:
        return self._make_weights(first=False)



def frame_seconds(j: int, plan: WindowPlan) -> float:
    """A time whose frame by the processor's rule, ceil(t * sr / hop), is exactly j (half a frame before it)."""
    return 0.0 if j == 0 else (j - 0.5) * plan.hop / plan.sample_rate
