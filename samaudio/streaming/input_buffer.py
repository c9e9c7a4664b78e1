"""The stream's input at the model's rate, kept from the first sample a window still needs: the mirror of
`OverlapAdd` on the way in.

Legend: ch channels, L samples at the model's rate (48 kHz).
"""

from __future__ import annotations

import torch


class InputBuffer:
    """Resampled input appended as it arrives, read a window at a time, dropped once no window needs it.

    Pieces are kept as they come and joined once per window read: joining on every append would copy the whole
    buffer each time, quadratic in the pushes per window.
    """

    def __init__(self, channels: int):
        self._joined = torch.zeros(channels, 0)  # (ch, m) samples from `start` on
        self._pieces: list[torch.Tensor] = []  # (ch, m) samples after _joined, not yet joined to it
        self.start = 0  # the stream sample of the first sample held
        self.length = 0  # samples held, joined or not

    @property
    def end(self) -> int:
        """One past the last stream sample received."""
        return self.start + self.length

    def append(self, y: torch.Tensor) -> None:
        """Add (ch, m) samples after the last ones."""
        if y.shape[-1]:
            self._pieces.append(y)
            self.length += y.shape[-1]

    def window(self, at: int, samples: int) -> torch.Tensor:
        """Stream samples [at, at + samples) as a new (ch, samples) tensor, zeros past the end (the last window is
        padded the same way always). `at` >= start."""
        a = at - self.start
        assert a >= 0, (at, self.start)
        audio = self._join()[:, a : a + samples]
        if audio.shape[-1] < samples:
            audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))
        return audio.clone()  # (ch, samples): the job's own, never a view of the buffer

    def drop(self, upto: int) -> None:
        """Forget the samples before stream sample `upto` (those held, at most)."""
        y = self._join()
        n = min(max(0, upto - self.start), y.shape[-1])
        self._joined = y[:, n:]
        self.start += n
        self.length -= n

    def _join(self) -> torch.Tensor:
        if self._pieces:
            self._joined = torch.cat([self._joined, *self._pieces], dim=-1)
            self._pieces = []
        return self._joined
