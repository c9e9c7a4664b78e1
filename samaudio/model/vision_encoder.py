"""The Perception Encoder (PE) CLIP that turns masked video frames into one feature per latent frame.

Visual prompting (issue #11): the user blacks out an object in the video, the processor picks one frame per
40-ms latent frame, and this module encodes each frame to a unit vector that `SAMAudio.align_masked_video`
adds to the DiT input. As the official model, it holds the **whole** PE CLIP (`model`): the vision tower that
encodes the frames and the text tower, whose weights are in every SAM-Audio checkpoint but never used.

Legend:
    B   videos in a batch                  N   frames of one video (Nmax: the longest in the batch)
    H,W frame height and width as given    S   image size the frames are resized to (`image_size`)
    P   patch size                         G   patch grid side, S / P (Gh, Gw when not square)
    L   tokens, 1 (CLS) + G*G              W   tower width
    nh  heads                              hs  head dim, W / nh
    Dv  feature size (`vision_encoder.dim` = PE output_dim)

Per frame:
    resize to S x S (bicubic, antialiased, rounded back to uint8), / 255, normalise to [-1, 1]
    conv1 patches (N, G*G, W) -> CLS + abs. position -> ln_pre -> blocks with 2-D RoPE -> ln_post
    -> attention pooling (a learned probe attends to every token) -> @ proj -> L2-normalise    (N, Dv)

Names are the official checkpoint keys under `vision_encoder.model.*` (perception_models `pe.CLIP`), and
so is their registration order, because the state_dict order is compared against the reference.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from samaudio.errors import ConfigError, InvalidRequestError
from samaudio.model.config import PerceptionEncoderConfig

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Configs: the PE tower sizes (perception_models `PEConfig` / `PETextConfig`), and the registry of named ones
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PEVisionConfig:
    """The vision tower. Field names and defaults are perception_models' `PEConfig`."""

    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    output_dim: int | None  # None: no `proj`, features are the pooled width
    ls_init_value: float | None = None  # not None: layer scale (`ls_1.gamma`, `ls_2.gamma`) in every block
    drop_path: float = 0.0  # training only
    image_size: int = 224  # pretraining size: sizes the position table; other sizes interpolate it
    use_abs_posemb: bool = True
    use_cls_token: bool = False
    use_rope2d: bool = True
    pool_type: str = "attn"  # "attn" (a learned probe), "tok" (the CLS token) or "avg"
    attn_pooler_heads: int = 8
    use_ln_pre: bool = True
    use_ln_post: bool = True


@dataclass
class PETextConfig:
    """The text tower: loaded with the checkpoint, unused by SAM-Audio. perception_models' `PETextConfig`."""

    context_length: int
    width: int
    heads: int
    layers: int
    output_dim: int
    mlp_ratio: float = 4.0
    vocab_size: int = 49408


@dataclass
class PEConfig:
    """A PE CLIP: both towers under one name (the `vision_encoder.name` of a SAM-Audio config)."""

    name: str
    vision: PEVisionConfig
    text: PETextConfig

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> PEConfig:
        """`{"name": ..., "vision": {...}, "text": {...}}`: the schema of a golden case's `pe_tiny_config`."""
        fields = dict(fields)
        unknown = sorted(set(fields) - {"name", "vision", "text"})
        if unknown or "vision" not in fields or "text" not in fields:
            raise ConfigError(
                f"a PE config is {{'name', 'vision': {{...}}, 'text': {{...}}}}; got keys {sorted(fields)}"
            )
        return cls(
            name=str(fields.get("name", "custom")),
            vision=_build(PEVisionConfig, fields["vision"], "vision"),
            text=_build(PETextConfig, fields["text"], "text"),
        )

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], name: str = "inferred", prefix: str = "") -> PEConfig:
        """The sizes a PE CLIP checkpoint implies, for a config name that is not in `PE_MODELS`.

        Every size that shapes a tensor is read from the tensors (keys relative to the CLIP, after `prefix`):
        widths, layers, patch, image size (from the position table), MLP ratios, output dims, CLS token,
        layer scale, ln_pre/ln_post, pooling. Head counts shape no tensor, so they are a guess, logged:
        head dim 64 (the released L14 and B16) when the width is a multiple of 64, else 16; the attention
        pooler has 8 heads (every release) from width 512 on, else as many as the tower. When a guess is
        wrong the features are wrong: give the sizes explicitly (`pe=` of `PerceptionEncoder`).
        """

        def get(key: str) -> torch.Tensor | None:
            return state.get(prefix + key)

        conv = get("visual.conv1.weight")
        tokens = get("token_embedding.weight")
        if conv is None or tokens is None:
            raise ConfigError(
                f"cannot infer PE sizes: no {prefix}visual.conv1.weight / {prefix}token_embedding.weight in the "
                "checkpoint; give the PE config explicitly"
            )
        width, patch = conv.shape[0], conv.shape[-1]
        use_cls = get("visual.class_embedding") is not None
        posemb = get("visual.positional_embedding")
        grid = math.isqrt(posemb.shape[0] - int(use_cls)) if posemb is not None else None
        fc = get("visual.transformer.resblocks.0.mlp.c_fc.weight")
        proj = get("visual.proj")
        if get("visual.attn_pool.probe") is not None:
            pool = "attn"
        elif use_cls:
            pool = "tok"  # "tok" and "avg" leave the same keys; PE-Core pools with attention anyway
        else:
            pool = "avg"
        heads = _guess_heads(width)
        vision = PEVisionConfig(
            patch_size=patch,
            width=width,
            layers=_count_blocks(state, prefix + "visual.transformer.resblocks."),
            heads=heads,
            mlp_ratio=fc.shape[0] / width,
            output_dim=None if proj is None else proj.shape[1],
            ls_init_value=1.0 if get("visual.transformer.resblocks.0.ls_1.gamma") is not None else None,
            image_size=grid * patch if grid is not None else 224,
            use_abs_posemb=posemb is not None,
            use_cls_token=use_cls,
            pool_type=pool,
            attn_pooler_heads=8 if width >= 512 and width % 8 == 0 else heads,
            use_ln_pre=get("visual.ln_pre.weight") is not None,
            use_ln_post=get("visual.ln_post.weight") is not None,
        )
        text_fc = get("transformer.resblocks.0.mlp.c_fc.weight")
        text_width = tokens.shape[1]
        text = PETextConfig(
            context_length=get("positional_embedding").shape[0],
            width=text_width,
            heads=_guess_heads(text_width),
            layers=_count_blocks(state, prefix + "transformer.resblocks."),
            output_dim=get("text_projection").shape[1],
            mlp_ratio=text_fc.shape[0] / text_width if text_fc is not None else 4.0,
            vocab_size=tokens.shape[0],
        )
        logger.warning(
            "PE config %r is not registered: sizes read from the checkpoint (width %d, %d layers, patch %d, image %d); "
            "head counts guessed (%d heads, %d pooler heads): pass the PE config explicitly if they differ",
            name, width, vision.layers, patch, vision.image_size, vision.heads, vision.attn_pooler_heads,
        )  # fmt: skip
        return cls(name=name, vision=vision, text=text)


def _build(cls: type, fields: Any, where: str):
    if isinstance(fields, cls):
        return fields
    if not isinstance(fields, Mapping):
        raise ConfigError(
            f"PE config {where!r} must be a mapping of {cls.__name__} fields, got {type(fields).__name__}"
        )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in PE config {where!r}; known keys: {', '.join(sorted(known))}")
    try:
        return cls(**fields)
    except TypeError as e:  # a required size left out
        raise ConfigError(f"PE config {where!r}: {e}") from e


def _guess_heads(width: int) -> int:
    for head_dim in (64, 16):
        if width % head_dim == 0:
            return width // head_dim
    return 1


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


# The named PE CLIP models (perception_models core/vision_encoder/config.py, PE-Core: the ones with a text
# tower). SAM-Audio releases use PE-Core-L14-336; any other size is given explicitly or read from a checkpoint.
PE_MODELS: dict[str, PEConfig] = {
    "PE-Core-L14-336": PEConfig(
        name="PE-Core-L14-336",
        vision=PEVisionConfig(
            image_size=336, patch_size=14, width=1024, layers=24, heads=16, mlp_ratio=4.0, output_dim=1024,
            use_cls_token=True, pool_type="attn",
        ),
        text=PETextConfig(context_length=32, width=1024, heads=16, layers=24, output_dim=1024),
    ),
    "PE-Core-B16-224": PEConfig(
        name="PE-Core-B16-224",
        vision=PEVisionConfig(
            image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0, output_dim=1024,
            use_cls_token=True, pool_type="attn",
        ),
        text=PETextConfig(context_length=32, width=1024, heads=16, layers=24, output_dim=1024),
    ),
    "PE-Core-G14-448": PEConfig(
        name="PE-Core-G14-448",
        vision=PEVisionConfig(
            image_size=448, patch_size=14, width=1536, layers=50, heads=16, mlp_ratio=8960 / 1536,
            output_dim=1280, use_cls_token=False, pool_type="attn",
        ),
        text=PETextConfig(context_length=72, width=1280, heads=20, layers=24, output_dim=1280),
    ),
}  # fmt: skip


def resolve_pe_config(
    name: str,
    pe: PEConfig | Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    prefix: str = "",
) -> PEConfig:
    """The PE sizes for `vision_encoder.name`: given explicitly, else registered, else read from `state`.

    `state` may be a whole SAMAudio state_dict with `prefix="vision_encoder.model."`. Without `pe` and
    `state`, a name outside `PE_MODELS` is a ConfigError naming the ways out.
    """
    if pe is not None:
        return pe if isinstance(pe, PEConfig) else PEConfig.from_dict(pe)
    if name in PE_MODELS:
        return PE_MODELS[name]
    if state is not None:
        return PEConfig.from_state_dict(state, name=name, prefix=prefix)
    raise ConfigError(
        f"vision_encoder.name {name!r} is not a known PE config ({', '.join(PE_MODELS)}): give its sizes as a PE "
        "config ({'name', 'vision': {...}, 'text': {...}}) or load it from a checkpoint, which implies them"
    )


# ---------------------------------------------------------------------------------------------------------------
# Frame transform: torchvision `Resize((S, S), interpolation)` on tensors, then `/ 255` and Normalize(0.5, 0.5)
# ---------------------------------------------------------------------------------------------------------------

# torchvision `InterpolationMode` names that its tensor path supports -> (F.interpolate mode, antialias)
INTERPOLATION_MODES: dict[str, tuple[str, bool]] = {
    "NEAREST": ("nearest", False),
    "NEAREST_EXACT": ("nearest-exact", False),
    "BILINEAR": ("bilinear", True),
    "BICUBIC": ("bicubic", True),
}


def interpolation(name: str) -> tuple[str, bool]:
    """`InterpolationMode` member name (any case) -> how to call `F.interpolate`."""
    key = str(name).upper()
    if key not in INTERPOLATION_MODES:
        raise ConfigError(
            f"vision_encoder.interpolation_mode {name!r} is not supported; use one of {', '.join(INTERPOLATION_MODES)}"
        )
    return INTERPOLATION_MODES[key]


def resize_frames(frames: torch.Tensor, size: int, mode: str = "BICUBIC") -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, size, size), squashed (no crop), exactly as torchvision resizes a tensor.

    Integer frames are resampled in float32 and brought back to their dtype: bicubic overshoots, so uint8 is
    clamped to [0, 255] first, then rounded (the official features see this rounding). Float frames stay float.
    """
    if tuple(frames.shape[-2:]) == (size, size):
        return frames  # torchvision returns the input unchanged
    torch_mode, antialias = interpolation(mode)
    x = frames if frames.dtype in (torch.float32, torch.float64) else frames.to(torch.float32)
    align_corners = False if torch_mode in ("bilinear", "bicubic") else None
    x = F.interpolate(x, size=(size, size), mode=torch_mode, align_corners=align_corners, antialias=antialias)
    if x.dtype == frames.dtype:
        return x
    if torch_mode == "bicubic" and frames.dtype == torch.uint8:
        x = x.clamp(0, 255)
    if not frames.is_floating_point():
        x = x.round()
    return x.to(frames.dtype)


def transform_frames(frames: torch.Tensor, size: int, mode: str = "BICUBIC") -> torch.Tensor:
    """RGB frames 0..255 (N, 3, H, W), uint8 or float -> (N, 3, size, size) float32 in [-1, 1]."""
    x = resize_frames(frames, size, mode).float() / 255
    return (x - 0.5) / 0.5  # Normalize(mean=0.5, std=0.5), per channel


# ---------------------------------------------------------------------------------------------------------------
# 2-D rotary embedding of the vision blocks (perception_models `Rope2D`; no weights, so no keys)
# ---------------------------------------------------------------------------------------------------------------


def rope_2d(
    grid_h: int, grid_w: int, head_dim: int, cls_token: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (L, hs) with L = [1 +] Gh*Gw.

    A 1-D rotary table over hs/2 channels, f_j = 10000^(-2j / (hs/2)), each frequency used for one channel
    pair (interleaved: f0 f0 f1 f1 ...). A patch at row r, column c turns by (c+1)*f in the first hs/2
    channels and (r+1)*f in the last; position 0 is the CLS token's, which is not turned. Built in float32.
    """
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))  # (hs/4,)
    freqs = freqs.repeat_interleave(2)  # (hs/2,) interleaved pairs
    offset = 1 if cls_token else 0  # leave position 0 to the CLS token
    ys = torch.arange(grid_h, device=device, dtype=torch.float32) + offset
    xs = torch.arange(grid_w, device=device, dtype=torch.float32) + offset
    angle_x = (xs[:, None] * freqs)[None, :, :].expand(grid_h, grid_w, dim)  # (Gh, Gw, hs/2)
    angle_y = (ys[:, None] * freqs)[:, None, :].expand(grid_h, grid_w, dim)  # (Gh, Gw, hs/2)
    angles = torch.cat([angle_x, angle_y], dim=-1).reshape(grid_h * grid_w, head_dim)  # (Gh*Gw, hs)
    if cls_token:
        angles = torch.cat([angles.new_zeros(1, head_dim), angles], dim=0)  # (L, hs)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Each channel pair (a, b) -> (-b, a)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-b, a), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, nh, L, hs) rotated by the (L, hs) angles."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Transformer blocks (shared by both towers)
# ---------------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with one packed q/k/v projection: self-attention, or cross-attention to `context`.

    Parameter names are torch's `nn.MultiheadAttention` ones, which the official checkpoint keys carry.
    """

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ConfigError(f"PE width {dim} is not a multiple of its {n_heads} heads")
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # rows: q, k, v
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        nh = self.n_heads
        if context is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 x (B, T, C)
        else:
            w_q, w_kv = self.in_proj_weight.split([C, 2 * C])
            b_q, b_kv = self.in_proj_bias.split([C, 2 * C])
            q = F.linear(x, w_q, b_q)  # (B, T, C)
            k, v = F.linear(context, w_kv, b_kv).chunk(2, dim=-1)  # 2 x (B, S, C)
        q = q.unflatten(-1, (nh, -1)).transpose(1, 2)  # (B, nh, T, hs)
        k = k.unflatten(-1, (nh, -1)).transpose(1, 2)  # (B, nh, S, hs)
        v = v.unflatten(-1, (nh, -1)).transpose(1, 2)  # (B, nh, S, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs), scale hs^-0.5
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


def mlp(dim: int, hidden: int) -> nn.Sequential:
    # Sequential names c_fc / gelu / c_proj are forced by the keys `mlp.c_fc.*`, `mlp.c_proj.*`.
    return nn.Sequential(
        OrderedDict([("c_fc", nn.Linear(dim, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, dim))])
    )


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))  # key `ls_{1,2}.gamma`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)), each optionally layer-scaled."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, ls_init_value: float | None):
        super().__init__()
        # registration order attn, ls_1, ls_2, ln_1, ln_2, mlp is the official key order
        self.attn = Attention(dim, n_heads)
        self.ls_1 = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ls_2 = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope=None, mask=None) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), rope=rope, mask=mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, ls_init_value: float | None):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, ls_init_value) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor, rope=None, mask=None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, rope=rope, mask=mask)
        return x


class AttentionPooling(nn.Module):
    """A learned probe attends to every token (CLS included); y = a + mlp(layernorm(a)). (N, L, W) -> (N, W)."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        # the pooler's MLP ratio is 4 whatever the tower's (official AttentionPooling default)
        self.probe = nn.Parameter(torch.randn(1, 1, dim))
        self.attn = Attention(dim, n_heads)
        self.layernorm = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[0]
        q = self.probe.expand(N, -1, -1).to(x.dtype)  # (N, 1, W)
        a = self.attn(q, context=x)  # (N, 1, W)
        return (a + self.mlp(self.layernorm(a))).squeeze(1)  # (N, W)


# ---------------------------------------------------------------------------------------------------------------
# The two towers and the CLIP that holds them
# ---------------------------------------------------------------------------------------------------------------


class VisionTransformer(nn.Module):
    """Images (N, 3, h, w), normalised to [-1, 1] -> (N, output_dim) image embeddings."""

    def __init__(self, cfg: PEVisionConfig):
        super().__init__()
        if cfg.pool_type not in ("attn", "tok", "avg"):
            raise ConfigError(
                f"PE vision pool_type {cfg.pool_type!r}: SAM-Audio needs one vector per frame (attn, tok or avg)"
            )
        if cfg.use_rope2d and (cfg.width // cfg.heads) % 4:
            raise ConfigError(f"PE head dim {cfg.width // cfg.heads} must be a multiple of 4 for the 2-D RoPE")
        self.cfg = cfg
        W, scale = cfg.width, cfg.width**-0.5
        self.grid = cfg.image_size // cfg.patch_size  # G of the position table
        # own parameters first: the state_dict lists them before the children
        self.class_embedding = nn.Parameter(scale * torch.randn(W)) if cfg.use_cls_token else None
        n_pos = int(cfg.use_cls_token) + self.grid**2
        self.positional_embedding = nn.Parameter(scale * torch.randn(n_pos, W)) if cfg.use_abs_posemb else None
        self.proj = nn.Parameter(scale * torch.randn(W, cfg.output_dim)) if cfg.output_dim is not None else None
        self.conv1 = nn.Conv2d(3, W, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.ln_pre = nn.LayerNorm(W, eps=1e-5) if cfg.use_ln_pre else nn.Identity()
        self.ln_post = nn.LayerNorm(W, eps=1e-5) if cfg.use_ln_post else nn.Identity()
        self.transformer = Transformer(W, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.ls_init_value)
        self.attn_pool = AttentionPooling(W, cfg.attn_pooler_heads) if cfg.pool_type == "attn" else None

    def _positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(L, W) absolute positions; the patch part resized bilinearly when the grid is not the table's."""
        pos = self.positional_embedding
        if (grid_h, grid_w) == (self.grid, self.grid):
            return pos
        n_cls = int(self.cfg.use_cls_token)
        cls, patches = pos[:n_cls], pos[n_cls:]
        patches = patches.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)  # (1, W, G, G)
        patches = F.interpolate(patches, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)  # (Gh*Gw, W)
        return torch.cat([cls, patches], dim=0)  # (L, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, h, w = x.shape
        P, W = self.cfg.patch_size, self.cfg.width
        grid_h, grid_w = h // P, w // P
        x = self.conv1(x)  # (N, W, Gh, Gw)
        x = x.permute(0, 2, 3, 1).reshape(N, grid_h * grid_w, W)  # (N, Gh*Gw, W), patches row-major
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.view(1, 1, W).expand(N, -1, -1), x], dim=1)  # (N, L, W)
        if self.positional_embedding is not None:
            x = x + self._positions(grid_h, grid_w)
        rope = None
        if self.cfg.use_rope2d:
            rope = rope_2d(grid_h, grid_w, W // self.cfg.heads, self.cfg.use_cls_token, x.device)  # 2 x (L, hs)
        x = self.ln_pre(x)
        x = self.transformer(x, rope=rope)  # (N, L, W)
        x = self.ln_post(x)
        if self.cfg.pool_type == "attn":
            x = self.attn_pool(x)  # (N, W)
        elif self.cfg.pool_type == "tok":
            x = x[:, 0]
        else:
            x = x.mean(dim=1)
        return x @ self.proj if self.proj is not None else x  # (N, output_dim)


class CLIP(nn.Module):
    """The PE CLIP (`vision_encoder.model`): the text tower's tensors at the top level, the vision tower in `visual`.

    The official class derives from the text transformer, hence its keys at the top level. SAM-Audio only
    encodes images: the text tower is built so that checkpoints load strictly, and never run here.
    """

    def __init__(self, cfg: PEConfig):
        super().__init__()
        t, scale = cfg.text, cfg.text.width**-0.5
        # own parameters, in official key order: positional_embedding, text_projection, logit_scale
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(t.context_length, t.width))
        self.text_projection = nn.Parameter(scale * torch.randn(t.width, t.output_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, None)
        self.ln_final = nn.LayerNorm(t.width, eps=1e-5)
        self.visual = VisionTransformer(cfg.vision)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.visual(images)  # (N, Dv)
        return F.normalize(x, dim=-1) if normalize else x  # x / max(|x|, 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# The SAM-Audio wrapper (`SAMAudio.vision_encoder`)
# ---------------------------------------------------------------------------------------------------------------


class PerceptionEncoder(nn.Module):
    """Videos -> per-frame features (B, Nmax, Dv), zero-padded after each video's last frame.

    `pe` gives the PE sizes when `config.name` is not in `PE_MODELS` (see `resolve_pe_config`, which can also
    read them from a checkpoint). Frames are encoded `config.batch_size` at a time (<= 0: all at once), which
    bounds memory and changes nothing else.
    """

    def __init__(self, config: PerceptionEncoderConfig, pe: PEConfig | Mapping[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.pe = resolve_pe_config(config.name, pe)
        out = self.pe.vision.output_dim or self.pe.vision.width
        if config.dim != out:
            raise ConfigError(
                f"vision_encoder.dim is {config.dim} but PE {self.pe.name!r} outputs {out} features: set dim to {out}"
            )
        interpolation(config.interpolation_mode)  # fail now, not at the first video
        self.model = CLIP(self.pe)

    @property
    def dim(self) -> int:
        return self.config.dim

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB 0..255 -> (N, 3, S, S) float32 in [-1, 1]."""
        return transform_frames(frames, self.config.image_size, self.config.interpolation_mode)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames of one video -> (N, Dv) features, `batch_size` frames per encoder call."""
        weight = self.model.visual.conv1.weight
        frames = frames.to(weight.device)
        step = self.config.batch_size if self.config.batch_size > 0 else max(len(frames), 1)
        chunks = []
        for i in range(0, len(frames), step):
            x = self.transform(frames[i : i + step]).to(weight.dtype)  # (n, 3, S, S)
            chunks.append(self.model.encode_image(x, normalize=self.config.normalize_feature))  # (n, Dv)
        if not chunks:
            return weight.new_zeros(0, self.dim)
        return torch.cat(chunks)  # (N, Dv)

    @torch.no_grad()
    def forward(self, videos: Sequence[torch.Tensor], length: int | None = None) -> torch.Tensor:
        """B videos (N_i, 3, H_i, W_i), uint8 (or float) RGB 0..255 -> (B, Nmax, Dv), zeros after frame N_i.

        `length` pads the time axis to that many frames (the batch's latent frames T) instead of Nmax.
        """
        for i, video in enumerate(videos):
            if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[1] != 3:
                shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
                raise InvalidRequestError(f"videos[{i}] is {shape} but must be a (frames, 3, height, width) RGB tensor")
        if not videos:
            raise InvalidRequestError("no videos given: pass one (frames, 3, height, width) tensor per batch item")
        features = [self.encode(video) for video in videos]  # B x (N_i, Dv)
        n_max = max(len(f) for f in features)
        if length is not None and length < n_max:
            raise InvalidRequestError(
                f"a video has {n_max} frames but the batch has {length} latent frames: give at most one frame "
                "per latent frame (the processor samples them)"
            )
        padded = pad_sequence(features, batch_first=True)  # (B, Nmax, Dv)
        if length is not None and length > n_max:
            padded = F.pad(padded, (0, 0, 0, length - n_max))  # (B, T, Dv)
        return padded
