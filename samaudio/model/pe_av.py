"""The PE-AV audio transformer shared by the span predictor (PE-A-Frame) and the SAM-Audio Judge.

perception_models `core/audio_visual_encoder/transformer.py`: a learned CLS token in front, a residual conv
block over time, then pre-norm layers of RoPE self-attention (per-head RMS-normed q and k) and a SwiGLU MLP,
a final RMSNorm and a bias-free output Linear. It returns the frames (CLS dropped) and the CLS output.

Legend:
    B   batch                  T   input frames (codec latents, 25 per second)
    S   T + 1 (CLS in front)   H   hidden_size
    nh  attention heads        nkv key/value heads     hd  head_dim      I   intermediate_size

Module and parameter names are the official checkpoint keys (`embeddings.cls_token`,
`layers.{i}.self_attn.q_proj`, `mlp.gate_proj`, `input_layernorm`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samaudio.model.config import PEAVTransformerConfig
from samaudio.model.rope import RotaryEmbedding, apply_rotary
from samaudio.model.transformer import RMSNorm


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics use only valid positions, its output zeroed on padded ones (`MaskedGroupNorm`)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        B, C, S = x.shape
        g = self.num_groups
        xg = x.view(B, g, C // g, S)  # (B, g, C/g, S)
        m = mask[:, None, None, :].expand_as(xg)  # (B, g, C/g, S)
        n = m.sum(dim=(2, 3), keepdim=True)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / n
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / n  # biased, as torch.masked.var(unbiased=False)
        y = ((xg - mean) / torch.sqrt(var + self.eps)).view(B, C, S)
        y = y * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return y * mask[:, None, :]


class ConvBlock1d(nn.Module):
    """GroupNorm (one group) -> SiLU -> Conv1d(k=3, "same"), channels first."""

    def __init__(self, hidden: int):
        super().__init__()
        self.groupnorm = MaskedGroupNorm(num_groups=1, num_channels=hidden, eps=1e-5)
        self.project = nn.Conv1d(hidden, hidden, kernel_size=3, padding="same")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.project(F.silu(self.groupnorm(x, mask)))


class ResnetBlock1d(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.block1 = ConvBlock1d(hidden)
        self.block2 = ConvBlock1d(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, H, S)
        h = h + self.block2(self.block1(h, mask), mask)
        return h.transpose(1, 2)  # (B, S, H)


class Embeddings(nn.Module):
    """Prepend the CLS token (and a True to the mask), then the residual conv block."""

    def __init__(self, hidden: int):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.resnet_block = ResnetBlock1d(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, S, H)
        if mask is not None:
            mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)  # (B, S)
        return self.resnet_block(x, mask), mask


class SelfAttention(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        H, nh, nkv, hd = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.nh, self.nkv, self.hd = nh, nkv, hd
        bias = config.attention_bias
        self.q_proj = nn.Linear(H, nh * hd, bias=bias)
        self.k_proj = nn.Linear(H, nkv * hd, bias=bias)
        self.v_proj = nn.Linear(H, nkv * hd, bias=bias)
        self.o_proj = nn.Linear(nh * hd, H, bias=bias)
        self.q_norm = RMSNorm(hd, config.rms_norm_eps)  # per head, before RoPE
        self.k_norm = RMSNorm(hd, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, S, self.nh, self.hd)).transpose(1, 2)  # (B, nh, S, hd)
        k = self.k_norm(self.k_proj(x).view(B, S, self.nkv, self.hd)).transpose(1, 2)  # (B, nkv, S, hd)
        v = self.v_proj(x).view(B, S, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, S, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.nkv != self.nh:
            k = k.repeat_interleave(self.nh // self.nkv, dim=1)
            v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nh, S, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        self.self_attn = SelfAttention(config)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class PEAVTransformer(nn.Module):
    """(B, T, H) projected latents -> frames (B, T, H) and the CLS output (B, H).

    `attention_mask` (B, T), True on valid frames, masks the conv block's statistics and the attention keys.
    None runs unmasked (the judge always does: see judge.py).
    """

    def __init__(self, config: PEAVTransformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.rope = RotaryEmbedding(config.head_dim, config.max_position_embeddings, owner="the PE-AV transformer")

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = None if attention_mask is None else attention_mask.bool()
        h, mask = self.embeddings(x, mask)  # (B, S, H)
        cos, sin = self.rope(h.shape[1])  # (S, hd/2) each, CLS at position 0
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        h = self.output(self.norm(h))  # (B, S, H)
        return h[:, 1:], h[:, 0]
