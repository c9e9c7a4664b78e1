"""Overlap-add: weighted windows summed into one signal, normalised by the summed weights (demucs `apply.py`)."""

from __future__ import annotations

from typing import Sequence

import torch


class OverlapAdd:
    """Weighted windows summed into one signal and read out in order, normalised by the summed weights.

    One buffer of `rows` x `capacity` samples is kept for the whole stream: adding a window and taking the
    final samples allocate nothing but the output, so stitching costs the same for every window.
    """

    def __init__(self, rows: int, capacity: int):
        # columns past `length` are garbage until `add` zeroes them as a window first reaches them
        self._acc = torch.empty(rows, capacity)  # (rows, capacity) weighted sum from sample `start` on
        self._den = torch.empty(capacity)  # (capacity,) summed weights
        self.start = 0  # the stream sample of column 0
        self.length = 0  # columns in use

    def add(self, at: int, parts: Sequence[torch.Tensor], weights: torch.Tensor) -> None:
        """Add a window from stream sample `at` (>= start) on: `parts` (r_i, n) fill the rows in order, each
        times `weights` (n,), which count once in the normalisation."""
        a = at - self.start
        end = a + weights.shape[0]
        assert a >= 0, (at, self.start)
        if end > self._den.shape[0]:  # more windows in flight than planned for: grow once
            grow = end - self._den.shape[0]
            self._acc = torch.nn.functional.pad(self._acc, (0, grow))
            self._den = torch.nn.functional.pad(self._den, (0, grow))
        if end > self.length:
            self._acc[:, self.length : end].zero_()
            self._den[self.length : end].zero_()
            self.length = end
        row = 0
        for part in parts:
            # += part * weights, without the temporaries
            self._acc[row : row + part.shape[0], a:end].addcmul_(part, weights)
            row += part.shape[0]
        self._den[a:end] += weights

    def take(self, upto: int) -> torch.Tensor:
        """The finished signal from `start` to stream sample `upto`, which no later window touches: (rows, m)."""
        n = upto - self.start
        z = self._acc[:, :n] / self._den[:n]  # (rows, n)
        rest = self.length - n
        if rest > 0:  # the part later windows still add to moves to the front (a copy first when they overlap)
            kept, den = self._acc[:, n : self.length], self._den[n : self.length]
            if rest > n:
                kept, den = kept.clone(), den.clone()
            self._acc[:, :rest].copy_(kept)
            self._den[:rest].copy_(den)
        self.length = max(rest, 0)
        self.start = upto
        return z

