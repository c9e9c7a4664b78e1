"""Conditioning added to the projected DiT input: masked-video features and span anchors.

Legend: B batch, T latent frames, D transformer dim, Dv vision feature dim, E anchor embedding dim,
A anchor slots per item.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class AlignModalities(nn.Module):
    """`x + tanh(gate) * LayerNorm(conv(video))`: masked-video features added frame by frame.

    `separate()` passes zeros when there is no video, so even then the term `tanh(gate) * LayerNorm(conv.bias)`
    is added at every frame (official behaviour). `None` skips it.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # key order gate, conv, layer_norm as in the official state_dict
        self.gate = nn.Parameter(torch.zeros(1))
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=1)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            return x
        v = self.conv(features).transpose(1, 2)  # (B, Dv, T) -> (B, T, D)
        return x + self.gate.tanh() * self.layer_norm(v)


class EmbedAnchors(nn.Module):
    """`x + tanh(gate) * proj(embed(anchor_ids[alignment]))`: span prompts as per-frame embeddings.

    Ids: `<null>` 0, `+` 1, `-` 2, `<pad>` 3 (= num_anchors, the Embedding's padding_idx). Each frame points
    (`anchor_alignment`) at one slot of its item's `anchor_ids`.
    """

    def __init__(self, num_anchors: int, embedding_dim: int, out_dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(1))
        self.embed = nn.Embedding(num_anchors + 1, embedding_dim, padding_idx=num_anchors)
        self.proj = nn.Linear(embedding_dim, out_dim, bias=False)

    def forward(
        self, x: torch.Tensor, anchor_ids: torch.Tensor | None, anchor_alignment: torch.Tensor | None
    ) -> torch.Tensor:
        if anchor_ids is None:
            return x
        ids = anchor_ids.gather(1, anchor_alignment)  # (B, A) -> (B, T): the id each frame points at
        return x + self.gate.tanh() * self.proj(self.embed(ids))  # (B, T, E) -> (B, T, D)


class SinusoidalEmbedding(nn.Module):
    """`cat(cos(t * f_k), sin(t * f_k))`, f_k = 10000^(-k / (dim/2)): the flow time added to the text memory."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        half = dim // 2
        inv_freq = torch.exp(-torch.log(torch.tensor(theta)) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        a = time[:, None].float() * self.inv_freq[None]  # (B, dim/2)
        return torch.cat([a.cos(), a.sin()], dim=-1).to(time.dtype)  # (B, dim)
