"""Rotary position embedding of the DiT's self-attention (official `rope.py`).

Legend: `B` batch, `H` heads, `T` latent frames, `hd` head dim, `P` = `max_positions` (table length).

Interleaved pairs: channels (2i, 2i+1) of a head form the i-th complex number, rotated by the angle
`p * theta ** (-2i / hd)` at frame p, with `theta = max(10000, 2 * max_positions)` (20000 for the default
10000 frames). The table is built in float32 exactly as the official code does: an outer product of float32
positions and float32 frequencies, then float32 cos/sin. A float64 table differs by up to ~1e-5 at long
positions, more than the golden tolerance allows.
"""

from __future__ import annotations

import torch
from torch import nn

from samaudio.errors import InvalidRequestError

# The DiT works on DACVAE latents: 48000 Hz / hop 1920 = 25 frames per second. Only used to state limits in
# seconds in error messages.
FRAMES_PER_SECOND = 25


def rope_theta(max_positions: int) -> float:
    """The RoPE base the official model derives from the table length."""
    return float(max(10000, 2 * max_positions))


class RotaryEmbedding(nn.Module):
    """A precomputed cos/sin table for positions 0..max_positions-1; `forward(T)` returns its first T rows."""

    def __init__(self, head_dim: int, max_positions: int, owner: str = "the DiT"):
        super().__init__()
        self.owner = owner  # named in the length error
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.theta = rope_theta(max_positions)
        # Derived, not learned: kept out of the state_dict (no official key) and rebuilt on every move.
        self.register_buffer("freqs_cis", self._table(torch.device("cpu")), persistent=False)

    def _table(self, device: torch.device) -> torch.Tensor:
        freqs = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        angles = torch.outer(torch.arange(self.max_positions, device=device).float(), freqs)  # (P, hd/2)
        return torch.stack([angles.cos(), angles.sin()])  # (2, P, hd/2): cos, sin

    def _apply(self, fn, recurse: bool = True):
        # `Module.to(torch.bfloat16)` would round the table; rebuild it in float32 on the new device instead.
        super()._apply(fn, recurse)
        self.freqs_cis = self._table(self.freqs_cis.device)
        return self

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (T, hd/2) float32, for frames 0..T-1."""
        if seq_len > self.max_positions:
            raise InvalidRequestError(
                f"input has {seq_len} latent frames ({seq_len / FRAMES_PER_SECOND:.2f} s) but {self.owner}'s rotary "
                f"table covers at most max_positions = {self.max_positions} frames "
                f"({self.max_positions / FRAMES_PER_SECOND:.2f} s at {FRAMES_PER_SECOND} frames per second); "
                f"separate shorter audio or split it into chunks"
            )
        return self.freqs_cis[0, :seq_len], self.freqs_cis[1, :seq_len]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x (B, H, T, hd) by the angles of cos/sin (T, hd/2).

    Computed in float32 and cast back to x's dtype, as the official code does.
    """
    x_f = x.float().unflatten(-1, (-1, 2))  # (B, H, T, hd/2, 2)
    x0, x1 = x_f.unbind(-1)  # (B, H, T, hd/2) each
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (B, H, T, hd/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, H, T, hd)
