"""Piecewise resampling, equal to resampling the whole stream at once (torchaudio's windowed sinc, its defaults)."""

from __future__ import annotations

import functools
import math

import torch
import torchaudio

RESAMPLE_WIDTH = 6  # torchaudio's defaults (lowpass_filter_width, rolloff): the margins below depend on them
RESAMPLE_ROLLOFF = 0.99
# torchaudio's kernel has (new/g) x (orig/g + 2*width) taps, g = gcd(orig, new): tiny for the usual rates (all
# multiples of 25 Hz, e.g. 44100 -> 160 x 161) but huge when the rates share few factors (44101 Hz: 16000 x 14714,
# about 1 GB and slow). Such rates are refused rather than allowed to take a server's memory.
MAX_RESAMPLE_TAPS = 2**24


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # = torchaudio.functional.resample with its defaults on float32 audio (whose kernel it computes in float32),
    # the kernel built once and shared read-only by every stream at this pair of rates
    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


def resample_taps(orig: int, new: int) -> int:
    if orig == new:
        return 0
    g = math.gcd(orig, new)
    return new // g * (orig // g + 2 * _resample_width(orig // g, new // g))


def _resample_width(step_in: int, step_out: int) -> int:
    """torchaudio's one-sided kernel width in input samples, for rates already divided by their gcd."""
    return math.ceil(RESAMPLE_WIDTH * step_in / (RESAMPLE_ROLLOFF * min(step_in, step_out)))


class StreamResampler:
    """`torchaudio.functional.resample(whole, orig, new)`, computed as the signal arrives.

    torchaudio's output comes in blocks of `step_out` samples per `step_in` input samples (rates divided by
    their gcd); block b reads input samples [b*step_in - width, (b+1)*step_in + width) (zeros outside the
    signal). Block b is final once the input reaches (b+1)*step_in + margin, margin >= width a multiple of
    step_in; a piece that starts `margin` before the first missing block and ends `margin` after the last
    final one yields exactly those blocks.
    """

    def __init__(self, orig: int, new: int, channels: int):
        g = math.gcd(orig, new)
        self.orig, self.new = orig, new
        self.step_in, self.step_out = orig // g, new // g
        width = _resample_width(self.step_in, self.step_out)
        self.margin = 0 if orig == new else -(-width // self.step_in) * self.step_in
        self.n_in = 0  # samples received
        self.n_out = 0  # samples returned
        self._blocks = 0  # output blocks returned
        self._buf = torch.zeros(channels, self.margin)  # (ch, m) input from blocks*step_in - margin on
        self._finished = False

    @property
    def held(self) -> int:
        return self._buf.shape[-1]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """(ch, n) more input -> (ch, m) output that no later input can change."""
        self.n_in += x.shape[-1]
        if self.orig == self.new:
            self.n_out += x.shape[-1]
            return x
        self._buf = torch.cat([self._buf, x], dim=-1)
        return self._emit(max(self._blocks, (self.n_in - self.margin) // self.step_in))

    def finish(self) -> torch.Tensor:
        """The rest of the output, ceil(n_in * new / orig) samples in all, the input taken as zero after its end."""
        assert not self._finished
        self._finished = True
        total = -(-self.n_in * self.step_out // self.step_in)
        if self.orig == self.new:
            return self._buf[:, :0]
        last = -(-self.n_in // self.step_in)  # blocks that touch the signal
        need = last * self.step_in + self.margin - (self._blocks * self.step_in - self.margin)
        if self._buf.shape[-1] < need:
            self._buf = torch.nn.functional.pad(self._buf, (0, need - self._buf.shape[-1]))
        y = self._emit(max(self._blocks, last))
        keep = y.shape[-1] - (self.n_out - total)
        self.n_out = total
        return y[:, :keep]

    def _emit(self, blocks: int) -> torch.Tensor:
        n = blocks - self._blocks
        if n <= 0:
            return self._buf[:, :0]
        piece = self._buf[:, : n * self.step_in + 2 * self.margin]
        y = _resampler(self.orig, self.new)(piece)  # (ch, (n*step_in + 2*margin) * step_out / step_in)
        skip = self.margin // self.step_in * self.step_out
        y = y[:, skip : skip + n * self.step_out]
        self._buf = self._buf[:, n * self.step_in :]
        self._blocks = blocks
        self.n_out += y.shape[-1]
        return y

