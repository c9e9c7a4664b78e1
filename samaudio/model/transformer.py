"""The flow-matching DiT of SAM-Audio (`SAMAudio.transformer`; official transformer.py and patcher.py).

One call maps the conditioned noisy latents x_t and the flow time t to the velocity of the target and residual
latents. The blocks are DiT blocks (AdaLN-Zero modulation from t, shared `t_block`) with RoPE self-attention,
cross-attention to the text memory, and a SwiGLU feed-forward.

Legend:
    B   batch                          T   latent frames (25 per second)
    S   memory (text) tokens           D   model dim (`dim`)
    H   heads (`n_heads`)              hd  head dim, D / H
    F   timestep frequency embedding   Fh  feed-forward hidden size (`_ffn_hidden`)
    Dc  memory dim (`context_dim`)     Co  output channels (`out_channels`, 2C)

Module and parameter names are the official checkpoint keys (`transformer.*` of a SAM-Audio state_dict), and
so is their registration order, because state_dict order is compared against the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from samaudio.errors import ConfigError, InvalidRequestError
from samaudio.model.config import TransformerConfig
from samaudio.model.rope import RotaryEmbedding, apply_rotary

# Both sinusoids (t_embedder here, SAMAudio.timestep_emb) use this fixed period.
MAX_PERIOD = 10000

_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form
    "approx_gelu": lambda x: F.gelu(x, approximate="tanh"),
    "srelu": lambda x: F.relu(x).square(),
    "silu": F.silu,
}


def _activation(name: str, where: str):
    if name not in _ACTIVATIONS:
        raise ConfigError(f"transformer.{where} is {name!r}; expected one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _ffn_hidden(dim: int, ffn_exp: float, ffn_dim_multiplier: float, multiple_of: int, swiglu: bool) -> int:
    """The official FeedForward hidden size: truncate to int at every step, then round up to multiple_of."""
    hidden = int(ffn_exp * dim)
    if swiglu:
        hidden = int(2 * hidden / 3)
    hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN: x * (1 + scale) + shift, in one fused kernel."""
    return torch.addcmul(shift, x, 1 + scale)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (weight multiply included) and cast back."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) * weight on float32 copies (fused on GPU), then back to x's dtype.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class ProjectionLayer(nn.Module):
    """in -> out -> out MLP, gated when swiglu (`t_embedder.projection`, `y_embedder.projection`)."""

    def __init__(self, in_dim: int, out_dim: int, non_linearity: str, dropout: float, bias: bool, where: str):
        super().__init__()
        self.swiglu = non_linearity == "swiglu"
        self.act = F.silu if self.swiglu else _activation(non_linearity, where)
        # Registration order w1, w2, w3 is the official key order.
        self.w1 = nn.Linear(in_dim, out_dim, bias=bias)
        self.w2 = nn.Linear(out_dim, out_dim, bias=bias)
        self.w3 = nn.Linear(in_dim, out_dim, bias=bias) if self.swiglu else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))
        if self.w3 is not None:
            h = h * self.w3(x)
        return self.w2(self.dropout(h))


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] (unscaled) -> (B, D): a cos-first sinusoid of F channels, then a ProjectionLayer."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.frequency_embedding_dim = config.frequency_embedding_dim
        self.projection = ProjectionLayer(
            config.frequency_embedding_dim,
            config.dim,
            config.timestep_non_linearity,
            config.dropout,
            config.fc_bias,
            "timestep_non_linearity",
        )
        # Derived, not learned: kept out of the state_dict and rebuilt in float32 on every move.
        self.register_buffer("freqs", self._freqs(torch.device("cpu")), persistent=False)

    def _freqs(self, device: torch.device) -> torch.Tensor:
        half = self.frequency_embedding_dim // 2
        return torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=device, dtype=torch.float32) / half)

    def _apply(self, fn, recurse: bool = True):
        # `Module.to(torch.bfloat16)` would round the frequencies; keep them float32 as the reference computes them.
        super()._apply(fn, recurse)
        self.freqs = self._freqs(self.freqs.device)
        return self

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        args = time[:, None].float() * self.freqs[None]  # (B, F/2)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*(F/2)), cos first
        if self.frequency_embedding_dim % 2:
            emb = F.pad(emb, (0, 1))  # (B, F)
        # The reference casts to time's dtype; we cast to the weights' so float32 times drive a bf16 model
        # (identical when they agree).
        return self.projection(emb.to(self.projection.w1.weight.dtype))  # (B, D)


class ContextEmbedder(nn.Module):
    """Memory (B, S, Dc) -> (B, S, D), the keys and values of every cross-attention."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        # Registered before `projection`: the official key order lists y_embedder.norm first.
        self.norm = RMSNorm(config.context_dim, config.norm_eps) if config.context_norm else None
        self.projection = ProjectionLayer(
            config.context_dim,
            config.dim,
            config.context_non_linearity,
            config.context_embedder_dropout,
            config.fc_bias,
            "context_non_linearity",
        )

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            memory = self.norm(memory)
        return self.projection(memory)


class NormActConv(nn.Module):
    """GroupNorm(1 group) -> SiLU -> Conv1d(k=3, zero padding 1 each side): one half of the x_embedder block."""

    def __init__(self, dim: int):
        super().__init__()
        # Names `groupnorm` and `project` are forced by the keys x_embedder.block.block{1,2}.{groupnorm,project}.
        self.groupnorm = nn.GroupNorm(1, dim, eps=1e-5)
        self.project = nn.Conv1d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One group: statistics over all D channels and all T frames, padded frames included (as the reference).
        return self.project(F.silu(self.groupnorm(x)))


class ResnetBlock1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block1 = NormActConv(dim)
        self.block2 = NormActConv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)) + x  # in == out: identity shortcut, no key


class Patcher(nn.Module):
    """The x_embedder: a D -> D residual conv block over time (patch size 1, so no patching)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = ResnetBlock1d(dim)  # name forced by the keys x_embedder.block.*

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x.transpose(1, 2)).transpose(1, 2)  # (B, T, D) -> (B, D, T) -> (B, T, D)


# ---------------------------------------------------------------------------------------------------------------
# Attention, feed-forward and the DiT block
# ---------------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with qk-norm; self-attention (with RoPE) when src is x, cross-attention otherwise.

    The head split is the reference's, not the usual one: a (B, T, D) projection is viewed as (B, T, hd, H), so
    channel c belongs to head c mod H at position c div H. The merge back is the usual (B, T, H * hd).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.dim // config.n_heads
        self.wq = nn.Linear(config.dim, config.dim, bias=config.fc_bias)
        self.wk = nn.Linear(config.dim, config.dim, bias=config.fc_bias)
        self.wv = nn.Linear(config.dim, config.dim, bias=config.fc_bias)
        self.wo = nn.Linear(config.dim, config.dim, bias=config.fc_bias)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None

    def _split(self, z: torch.Tensor) -> torch.Tensor:
        B, L, _ = z.shape
        # Copied to contiguous heads: the strided view (channel stride H) would send qk-norm to its unfused
        # path and attention to the math kernel, where contiguous heads get the fused and flash kernels (#9).
        return z.view(B, L, self.head_dim, self.n_heads).permute(0, 3, 1, 2).contiguous()  # (B, H, L, hd)

    def forward(
        self,
        x: torch.Tensor,
        src: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, D = x.shape
        q = self._split(self.wq(x))  # (B, H, T, hd)
        k = self._split(self.wk(src))  # (B, H, L, hd), L = T (self) or S (cross)
        v = self._split(self.wv(src))  # (B, H, L, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        # mask: (B, 1, 1, L) bool, True = attend; only keys are masked, padded queries are computed normally.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D), channel h * hd + e


class FeedForward(nn.Module):
    """w2(dropout(act(w1 x) [* w3 x])), hidden size `_ffn_hidden`."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        swiglu = config.non_linearity == "swiglu"
        self.act = F.silu if swiglu else _activation(config.non_linearity, "non_linearity")
        hidden = _ffn_hidden(config.dim, config.ffn_exp, config.ffn_dim_multiplier, config.multiple_of, swiglu)
        self.w1 = nn.Linear(config.dim, hidden, bias=config.fc_bias)
        self.w2 = nn.Linear(hidden, config.dim, bias=config.fc_bias)
        self.w3 = nn.Linear(config.dim, hidden, bias=config.fc_bias) if swiglu else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w1(x)  # (B, T, Fh)
        if self.w3 is not None and not torch.is_grad_enabled():
            # Inference: gate in place, saving two (B, T, Fh) temporaries per layer (#9). Autograd needs them.
            return self.w2(self.dropout(F.silu(h, inplace=True).mul_(self.w3(x))))  # (B, T, D)
        h = self.act(h)
        if self.w3 is not None:
            h = h * self.w3(x)
        return self.w2(self.dropout(h))  # (B, T, D)


class DiTBlock(nn.Module):
    """AdaLN-Zero modulated self-attention, then unmodulated cross-attention, then modulated feed-forward."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        # Registration order is the official per-layer key order.
        self.scale_shift_table = nn.Parameter(torch.randn(6, config.dim) / config.dim**0.5)
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.cross_attention = Attention(config)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t0: torch.Tensor,
        mask: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        B, T, D = x.shape
        mod = self.scale_shift_table[None] + t0.view(B, 6, D)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # (B, 1, D) each
        z = modulate(self.attention_norm(x), shift_msa, scale_msa)  # (B, T, D)
        a = self.attention(z, z, mask, rope)
        h = torch.addcmul(x, gate_msa, a)  # x + gate * attn
        # No norm, modulation or gate before the cross-attention (as the reference).
        h = h + self.cross_attention(h, y, memory_mask)
        return torch.addcmul(h, gate_mlp, self.feed_forward(modulate(self.ffn_norm(h), shift_mlp, scale_mlp)))



# ---------------------------------------------------------------------------------------------------------------
# The DiT
# ---------------------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Velocity field v(x_t, t | memory): (B, T, D) conditioned latents -> (B, T, Co)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.dim % config.n_heads:
            raise ConfigError(f"transformer.dim ({config.dim}) is not a multiple of n_heads ({config.n_heads})")
        head_dim = config.dim // config.n_heads
        if config.use_rope and head_dim % 2:
            raise ConfigError(
                f"RoPE rotates channel pairs, so the head dim dim / n_heads = {head_dim} must be even; "
                f"change dim or n_heads, or set use_rope false"
            )
        self.config = config
        # Registration order is the official key order (parameters of this module first, then children).
        self.final_layer_scale_shift_table = nn.Parameter(torch.randn(2, config.dim) / config.dim**0.5)
        # The official model builds this Linear when in_channels is set but never calls it; it exists so that
        # such checkpoints load strictly.
        self.data_proj = nn.Linear(config.in_channels, config.dim) if config.in_channels is not None else None
        self.layers = nn.ModuleList(DiTBlock(config) for _ in range(config.n_layers))
        self.rope_embeddings = RotaryEmbedding(head_dim, config.max_positions) if config.use_rope else None
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.out_channels, bias=config.fc_bias)
        self.x_embedder = Patcher(config.dim)
        self.y_embedder = ContextEmbedder(config)
        self.t_embedder = TimestepEmbedder(config)
        self.t_block_act = _activation(config.t_block_non_linearity, "t_block_non_linearity")
        self.t_block = nn.Linear(config.dim, 6 * config.dim, bias=config.t_block_bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        *,
        padding_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D), time (B,) in [0, 1], padding_mask (B, T) and memory_padding_mask (B, S) True on valid
        positions, memory (B, S, Dc). Returns the velocity (B, T, Co)."""
        B, T, _ = x.shape
        if memory is None:
            raise InvalidRequestError(
                "the DiT needs memory (B, S, context_dim): pass memory_proj(text) + timestep embedding, "
                "or the timestep embedding alone as (B, 1, dim) when there is no text"
            )
        rope = self.rope_embeddings(T) if self.rope_embeddings is not None else None  # (T, hd/2) x2; checks T
        # Boolean key masks, True = attend, broadcast over heads and queries.
        mask = padding_mask.to(torch.bool)[:, None, None, :] if padding_mask is not None else None  # (B,1,1,T)
        memory_mask = (
            memory_padding_mask.to(torch.bool)[:, None, None, :] if memory_padding_mask is not None else None
        )  # (B, 1, 1, S)

        h = self.dropout(self.x_embedder(x))  # (B, T, D)
        t = self.t_embedder(time)  # (B, D)
        t0 = self.t_block(self.t_block_act(t))  # (B, 6D), shared by every layer's AdaLN
        y = self.y_embedder(memory)  # (B, S, D)
        for layer in self.layers:
            h = layer(h, y, t0, mask, memory_mask, rope)

        # The final AdaLN uses t itself (no activation, no t_block).
        shift, scale = (self.final_layer_scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        return self.output(self.dropout(modulate(self.norm(h), shift, scale)))  # (B, T, Co)
