"""dit_matmul_efficiency: how close one DiT forward comes to the machine's matmul speed.

A DiT of a real preset size (random weights) runs one forward on a stereo 10-second window (B = 2 rows,
T = 250 latent frames, S = 16 text tokens). Its FLOPs are counted analytically (`dit_flops`: every Linear
and conv, attention QK^T and AV; norms, activations and other elementwise work count zero), so the achieved
rate shows what the non-matmul work and any poorly shaped matmul cost. The reference is `torch.matmul` of
the DiT's largest GEMM, (B*T, D) @ (D, Fh) (the feed-forward up-projection), on the same machine, timed in
alternation with the forward; the figure is the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.common import median_ratio, side_by_side

PRESET = "sam-audio-small"
BATCH = 2  # a stereo window: one row per channel
FRAMES = 250  # 10 s at 25 latent frames per second
TEXT_TOKENS = 16
MIN_MATMUL_SECONDS = 0.2  # the reference matmul is repeated until one timing lasts about this long


@dataclass(frozen=True)
class DiTShape:
    B: int  # rows
    T: int  # latent frames
    S: int  # text tokens
    D: int  # model dim
    L: int  # layers
    Fh: int  # feed-forward hidden size
    F: int  # timestep frequency embedding size
    Co: int  # output channels
    swiglu: bool
    context_swiglu: bool
    timestep_swiglu: bool


def dit_shape(config: Any, B: int = BATCH, T: int = FRAMES, S: int = TEXT_TOKENS) -> DiTShape:
    from samaudio.model.transformer import _ffn_hidden

    swiglu = config.non_linearity == "swiglu"
    return DiTShape(
        B=B,
        T=T,
        S=S,
        D=config.dim,
        L=config.n_layers,
        Fh=_ffn_hidden(config.dim, config.ffn_exp, config.ffn_dim_multiplier, config.multiple_of, swiglu),
        F=config.frequency_embedding_dim,
        Co=config.out_channels,
        swiglu=swiglu,
        context_swiglu=config.context_non_linearity == "swiglu",
        timestep_swiglu=config.timestep_non_linearity == "swiglu",
    )


def dit_flops(s: DiTShape) -> int:
    """FLOPs of one DiT forward (2 per multiply-add) of the matmuls and convs; elementwise work counts zero."""
    B, T, S, D = s.B, s.T, s.S, s.D
    BT = B * T
    x_embedder = 2 * (2 * BT * D * D * 3)  # two k=3 convs D -> D
    t_embedder = 2 * B * ((2 if s.timestep_swiglu else 1) * s.F * D + D * D)  # w1 (and w3) F -> D, w2 D -> D
    t_block = 2 * B * D * 6 * D
    y_embedder = 2 * B * S * ((2 if s.context_swiglu else 1) * D * D + D * D)
    self_attn = 4 * 2 * BT * D * D + 2 * (2 * B * T * T * D)  # wq wk wv wo, then QK^T and AV over all heads
    cross_attn = 2 * 2 * BT * D * D + 2 * 2 * B * S * D * D + 2 * (2 * B * T * S * D)  # wq wo on x, wk wv on y
    ffn = (3 if s.swiglu else 2) * 2 * BT * D * s.Fh
    output = 2 * BT * D * s.Co
    return x_embedder + t_embedder + t_block + y_embedder + s.L * (self_attn + cross_attn + ffn) + output


def measure_dit_efficiency(
    preset: str = PRESET,
    device: str = "cpu",
    dtype: Any = None,
    repeats: int = 3,
    B: int = BATCH,
    T: int = FRAMES,
    S: int = TEXT_TOKENS,
    layers: int | None = None,
    min_matmul_seconds: float = MIN_MATMUL_SECONDS,
) -> dict[str, Any]:
    """The DiT of `preset` (random weights) against the reference matmul; `layers` overrides the depth."""
    import dataclasses

    import torch

    from samaudio.model.config import get_preset
    from samaudio.model.transformer import DiT

    dtype = dtype or torch.float32
    config = get_preset(preset).build_config().transformer
    if layers is not None:
        config = dataclasses.replace(config, n_layers=layers)
    shape = dit_shape(config, B, T, S)
    torch.manual_seed(0)
    dit = DiT(config).eval().to(device=device, dtype=dtype)
    x = torch.randn(B, T, shape.D, device=device, dtype=dtype)  # (B, T, D)
    time = torch.rand(B, device=device)  # (B,)
    memory = torch.randn(B, S, shape.D, device=device, dtype=dtype)  # (B, S, D)
    a = torch.randn(B * T, shape.D, device=device, dtype=dtype)  # (B*T, D)
    w = torch.randn(shape.D, shape.Fh, device=device, dtype=dtype)  # (D, Fh)

    @torch.inference_mode()
    def forward() -> None:
        dit(x, time, memory=memory)

    # repeat the matmul so that one timing is long enough to be measured well
    one = side_by_side({"mm": lambda: torch.matmul(a, w)}, repeats=1, device=device)["mm"][0]
    k = max(1, round(min_matmul_seconds / max(one, 1e-6)))

    def matmuls() -> None:
        for _ in range(k):
            torch.matmul(a, w)

    times = side_by_side({"dit": forward, "mm": matmuls}, repeats=repeats, device=device)
    flops = dit_flops(shape)
    mm_flops = 2 * B * T * shape.D * shape.Fh * k
    dit_rates = [flops / t for t in times["dit"]]
    mm_rates = [mm_flops / t for t in times["mm"]]
    tag = "" if dtype == torch.float32 else "_" + str(dtype).removeprefix("torch.")
    return {
        f"dit_matmul_efficiency{tag}": median_ratio(dit_rates, mm_rates),
        f"dit_gflops_per_second{tag}": statistics.median(dit_rates) / 1e9,
        f"matmul_gflops_per_second{tag}": statistics.median(mm_rates) / 1e9,
        f"dit_forward_seconds{tag}": statistics.median(times["dit"]),
        "dit_shape": f"{preset}{'' if layers is None else f' ({layers} layers)'}: B={B} T={T} S={S} D={shape.D} "
        f"L={shape.L} Fh={shape.Fh}; reference matmul ({B * T}x{shape.D}) @ ({shape.D}x{shape.Fh})",
        "dit_gflop_per_forward": flops / 1e9,
    }
