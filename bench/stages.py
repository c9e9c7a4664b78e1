"""separate_stages: our one-pass `separate()` split into encode / ODE / decode, before and after #20, side by side.

One model of the preset's size with random weights (the real 107.7 M-parameter codec), one mono clip, the
same noise and watermark messages for every variant. The variants run in rotation (alternating pairs), so
load on a shared machine falls on all of them alike; each figure is the median over the pairs with its spread
(min, max):

    before         the codec as before #20: weight norm recomputed per call, the watermark LSTM on all threads
    after          the output-preserving shortcuts on (folded weight norm, one-thread LSTM); both stems
    target         after, decoding the target only (`stems=["target"]`)
    residual_free  target, and the residual as mixture - target at the input length (no residual decode)
    bf16           after, under `autocast=torch.bfloat16` (opt-in; on a CPU only where it has bf16 kernels)

Stages: `encode` is the codec's encoder, `ode` every DiT evaluation of the solver, `decode` the codec's
decoder; `other` is the rest (text, argument preparation, the subtraction). Peak RSS is the process's
high-water mark reset before each call (Linux), on CUDA the peak allocated device memory. Fidelity: max|diff|
of each variant's stems against `before`'s, and of fewer solver steps against the run's steps.
`stream_*` figures time a stream through the streaming engine the same way (default 10 s windows, 2 s overlap),
with the variants `before`, `after`, `target` (a target-only stream), `null_sum` (residual = mix - target at the
input rate) and `bf16` (the stream under autocast).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from bench.common import MODEL_RATE, bench_signal, sync
from bench.memory import peak_rss_bytes

VARIANTS = ("before", "after", "target", "residual_free", "bf16")
STAGES = ("encode", "ode", "decode", "other", "total")


def _reset_peak(device: str) -> None:
    """Start a new high-water mark: device memory on CUDA, else this process's VmHWM (Linux clear_refs 5)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated()
    return peak_rss_bytes()


class StageClock:
    """Seconds spent in the codec's encoder and decoder and in the DiT during one call, by shadowing the three
    methods on the instances (removed by `close`); device work is synchronised at each boundary."""

    def __init__(self, model: Any, device: str):
        self.model, self.device = model, device
        self.seconds = {"encode": 0.0, "ode": 0.0, "decode": 0.0}
        codec = model.audio_codec
        self._originals = (model.forward, codec.forward, codec.decode)
        model.forward = self._timed("ode", model.forward)
        codec.forward = self._timed("encode", codec.forward)
        codec.decode = self._timed("decode", codec.decode)

    def _timed(self, stage: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.seconds[stage] += time.perf_counter() - start
            return out

        return run

    def close(self) -> None:
        del self.model.forward, self.model.audio_codec.forward, self.model.audio_codec.decode


def _configure(model: Any, variant: str) -> dict[str, Any]:
    """Set the codec for `variant`; the keyword arguments of its `separate` call."""
    import torch

    model.audio_codec.set_inference_shortcuts(
        fold_weight_norm=variant != "before", single_thread_lstm=variant != "before"
    )
    if variant in ("target", "residual_free"):
        return {"stems": ["target"]}
    if variant == "bf16":
        return {"autocast": torch.bfloat16}
    return {}


def separate_once(model: Any, batch: Any, audio: Any, kwargs: dict[str, Any], variant: str, device: str):
    """One timed call of `variant`: (seconds per stage, peak memory bytes, {stem: waveform})."""
    extra = _configure(model, variant)
    _reset_peak(device)
    clock = StageClock(model, device)
    try:
        sync(device)
        start = time.perf_counter()
        result = model.separate(batch, **kwargs, **extra)
        stems = {"target": result.target[0]}
        if variant == "residual_free":
            target = result.target[0][: audio.shape[-1]]
            stems["residual"] = audio[0].to(target.device) - target  # (L,) at the input length
        elif result.residual is not None:
            stems["residual"] = result.residual[0]
        sync(device)
        total = time.perf_counter() - start
    finally:
        clock.close()
    seconds = dict(clock.seconds)
    seconds["other"] = total - sum(seconds.values())
    seconds["total"] = total
    return seconds, _peak(device), {k: v.float().cpu() for k, v in stems.items()}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _max_diff(a: Any, b: Any) -> float:
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).abs().max())


def measure_stages(
    preset: str = "sam-audio-small",
    seconds: float = 10.0,
    steps: int = 16,
    pairs: int = 3,
    step_tiers: list[int] | None = None,
    variants: tuple[str, ...] = VARIANTS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Per-variant stage seconds (median, min, max over `pairs` rotations), peaks, speed-ups and fidelity."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset
    from samaudio.model.model import midpoint_ode_opt

    torch.manual_seed(0)
    model = SAMAudio.from_config(get_preset(preset).build_config(), random_text_encoder=True).to(device)
    processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
    audio = torch.from_numpy(bench_signal(0, round(seconds * MODEL_RATE), 1).T.copy())  # (1, L) mono
    batch = processor(descriptions=["a chirp"], audios=[audio])
    T = int(batch.sizes.max())
    C2 = model.config.transformer.out_channels
    g = torch.Generator().manual_seed(1)
    kwargs = dict(
        noise=torch.randn(1, T, C2, generator=g),
        watermark_message=torch.randint(0, 2, (2, 16), generator=g).float(),
        ode_opt=midpoint_ode_opt(steps),
    )
    if "bf16" in variants and device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        variants = tuple(v for v in variants if v != "bf16")

    # warm-up: one call of `after` (kernel choice; the folded weights are then held by every variant but `before`)
    separate_once(model, batch, audio, kwargs, "after", device)
    times: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    peaks: dict[str, int] = {v: 0 for v in variants}
    outputs: dict[str, dict[str, Any]] = {}
    for _ in range(pairs):
        for v in variants:
            s, peak, stems = separate_once(model, batch, audio, kwargs, v, device)
            times[v].append(s)
            peaks[v] = max(peaks[v], peak)
            outputs[v] = stems
    stages = {v: {st: _summary([t[st] for t in times[v]]) for st in STAGES} for v in variants}
    base = times["before"]
    speedup = {
        v: {st: _summary([b[st] / t[st] for b, t in zip(base, times[v])]) for st in ("encode", "decode", "total")}
        for v in variants
        if v != "before"
    }
    ref = outputs["before"]
    fidelity = {
        v: {stem: _max_diff(outputs[v][stem], ref[stem]) for stem in outputs[v]} for v in variants if v != "before"
    }
    tiers = {}
    model.audio_codec.set_inference_shortcuts()
    for n in step_tiers or []:
        result = model.separate(batch, **{**kwargs, "ode_opt": midpoint_ode_opt(n)})
        tiers[str(n)] = {
            "target": _max_diff(result.target[0].float().cpu(), ref["target"]),
            "residual": _max_diff(result.residual[0].float().cpu(), ref["residual"]),
        }
    mib = 1024 * 1024
    return {
        "stages_seconds": stages,
        "stages_speedup_vs_before": speedup,
        "stages_peak_mib": {v: p / mib for v, p in peaks.items()},
        "stages_folded_weight_mib": model.audio_codec.folded_weight_bytes / mib,
        "stages_max_abs_diff_vs_before": fidelity,
        "stages_step_tiers_max_abs_diff": tiers,
        "stages_setup": {
            "preset": preset, "audio_seconds": seconds, "solver_steps": steps, "pairs": pairs, "device": device,
            "step_tiers": step_tiers or [], "peak": "CUDA max allocated" if device.startswith("cuda") else "VmHWM",
        },
    }


STREAM_VARIANTS = ("before", "after", "target", "null_sum", "bf16")


def _stream_kwargs(model: Any, variant: str) -> dict[str, Any]:
    """Set the codec for `variant` of a stream; the `StreamingSeparator` keyword arguments it adds."""
    model.audio_codec.set_inference_shortcuts(
        fold_weight_norm=variant != "before", single_thread_lstm=variant != "before"
    )
    if variant == "target":
        return {"residual": False}  # target-only: the residual is the mix minus the target, no residual decode
    if variant == "null_sum":
        return {"null_sum": True}  # residual = mix - target at the input rate, no residual decode
    return {}


def stream_once(
    model: Any, processor: Any, seconds: float, steps: int, variant: str, device: str, channels: int = 1,
    windows: dict[str, float] | None = None,
) -> dict[str, Any]:
    """`seconds` of audio through a `StreamingSeparator` (default windows, or `windows`' chunk_seconds and
    overlap_seconds) in 0.25 s blocks: seconds per stage,
    peak memory, and the stems ({stem: (frames, ch)}). `bf16` runs the stream under `torch.autocast`, as
    `separate(autocast=torch.bfloat16)` runs one call (the worker is the caller's thread)."""
    import contextlib

    import numpy as np
    import torch

    from samaudio.model.model import midpoint_ode_opt
    from samaudio.streaming import StreamingSeparator

    extra = _stream_kwargs(model, variant)
    cast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if variant == "bf16" else None
    _reset_peak(device)
    clock = StageClock(model, device)
    try:
        with cast or contextlib.nullcontext():
            start = time.perf_counter()
            sep = StreamingSeparator(
                model, processor, "a chirp", sample_rate=MODEL_RATE, channels=channels,
                ode_opt=midpoint_ode_opt(steps), **(windows or {}), **extra,
            )  # fmt: skip
            blocks = []
            total_frames, step = round(seconds * MODEL_RATE), round(0.25 * MODEL_RATE)
            for first in range(0, total_frames, step):
                blocks += sep.push(bench_signal(first, min(step, total_frames - first), channels))
            blocks += sep.finish()
            sync(device)
            total = time.perf_counter() - start
    finally:
        clock.close()
    out = dict(clock.seconds)
    out["other"] = total - sum(out.values())
    out["total"] = total
    stems = {
        "target": np.concatenate([b.target for b in blocks]),  # (frames, ch)
        "residual": np.concatenate([b.residual for b in blocks]),
    }
    frames = sum(b.frames for b in blocks)
    windows = sep.counters.windows_done
    return {"seconds": out, "peak": _peak(device), "windows": windows, "frames": frames, "stems": stems}


def measure_stream_stages(
    preset: str = "sam-audio-small",
    seconds: float = 60.0,
    steps: int = 16,
    pairs: int = 1,
    variants: tuple[str, ...] = ("before", "after"),
    device: str = "cpu",
    channels: int = 1,
    chunk_seconds: float | None = None,
    overlap_seconds: float | None = None,
) -> dict[str, Any]:
    """The same split for a stream of `seconds` through the streaming engine (default windows unless given), in
    rotation: wall time per stage, real-time factor, peak memory and max|diff| of the stems against `before`."""
    import numpy as np
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.defaults import STREAM_DEFAULTS
    from samaudio.model.config import get_preset

    torch.manual_seed(0)
    model = SAMAudio.from_config(get_preset(preset).build_config(), random_text_encoder=True).to(device)
    processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
    if "bf16" in variants and device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        variants = tuple(v for v in variants if v != "bf16")
    windows = {
        "chunk_seconds": STREAM_DEFAULTS.chunk_seconds if chunk_seconds is None else chunk_seconds,
        "overlap_seconds": STREAM_DEFAULTS.overlap_seconds if overlap_seconds is None else overlap_seconds,
    }
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    stems: dict[str, dict[str, Any]] = {}
    for _ in range(pairs):
        for v in variants:
            run = stream_once(model, processor, seconds, steps, v, device, channels, windows)
            stems[v] = run.pop("stems")
            runs[v].append(run)
    model.audio_codec.set_inference_shortcuts()
    walls = {v: [r["seconds"]["total"] for r in runs[v]] for v in variants}
    mib = 1024 * 1024

    def max_diff(a: Any, b: Any) -> float:
        return float(np.abs(a.astype(np.float64) - b).max())

    return {
        "stream_stages_seconds": {
            v: {st: _summary([r["seconds"][st] for r in runs[v]]) for st in STAGES} for v in variants
        },
        "stream_speedup_vs_before": {
            v: _summary([b["seconds"]["total"] / r["seconds"]["total"] for b, r in zip(runs["before"], runs[v])])
            for v in variants
            if v != "before"
        },
        "stream_realtime_factor": {v: seconds / statistics.median(walls[v]) for v in variants},
        "stream_realtime_factor_spread": {v: [seconds / max(walls[v]), seconds / min(walls[v])] for v in variants},
        "stream_peak_mib": {v: max(r["peak"] for r in runs[v]) / mib for v in variants},
        "stream_max_abs_diff_vs_before": {
            v: {stem: max_diff(stems[v][stem], stems["before"][stem]) for stem in ("target", "residual")}
            for v in variants
            if v != "before"
        },
        "stream_setup": {
            "preset": preset, "audio_seconds": seconds, "channels": channels, "solver_steps": steps,
            "solver_steps_note": "" if steps == 16 else f"{steps} midpoint steps, fewer than the default 16, to fit "
            "the machine; encode and decode seconds do not depend on them, the ODE's scale with them",
            **windows,
            "pairs": pairs, "variants": list(variants), "device": device, "windows": runs[variants[0]][0]["windows"],
            "peak": "CUDA max allocated" if device.startswith("cuda") else "VmHWM",
        },
    }
