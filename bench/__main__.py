"""`python -m bench [--quick] [--out FILE.json] [--device cpu|cuda] [--threads N] [--only NAMES]`

Runs every measurement, prints a table (figure, value, target) and writes the figures as one flat JSON
object with the machine description under "machine". `--quick` uses sizes that finish within 10 minutes on a
2-core CPU (they are in the JSON under "settings"); without it the sizes are the realistic ones (10-second
windows, 10-minute streams with the real model), which on a CPU take much longer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from samaudio.defaults import STREAM_DEFAULTS

logger = logging.getLogger("bench")

TARGETS: dict[str, tuple[str, float]] = {
    "dit_matmul_efficiency": (">=", 0.6),
    "peak_rss_ratio_long_vs_short": ("<=", 1.15),
    "grpc_overhead_ratio": ("<=", 1.05),
    "transport_realtime_factor": (">=", 300.0),
    "first_audio_latency_ratio": ("<=", 1.1),
    "reliability_internal_or_unknown": ("<=", 0),
    "quality_si_sdri_median_db": (">=", 6.0),
}


@dataclass
class Settings:
    """Sizes of one run; `Settings.for_run` picks them from --quick and the device."""

    device: str = "cpu"
    quick: bool = True
    threads: int | None = None
    dit_preset: str = "sam-audio-small"
    dit_repeats: int = 3
    memory_short_seconds: float = 60.0
    memory_long_seconds: float = 600.0
    memory_stand_in: bool = True  # pass-through model step (see bench/memory.py)
    transport_seconds: float = 120.0
    transport_repeats: int = 7  # each stream is well under a second: many, for a steady median
    serving_seconds: float = 4.0
    serving_chunk_seconds: float = 2.0
    serving_overlap_seconds: float = 0.5
    serving_repeats: int = 4
    latency_repeats: int = 4
    rtf_presets: list[str] = field(default_factory=lambda: ["sam-audio-small"])
    rtf_seconds: float = 4.0
    rtf_repeats: int = 1
    rtf_warmup: bool = False
    bf16: bool = False  # extra bf16 figures (CUDA only)
    rerank_preset: str = "sam-audio-small"
    rerank_seconds: float = 2.0  # one mono window
    rerank_candidates: int = 4
    rerank_repeats: int = 2
    rerank_steps: int | None = 4  # midpoint steps of the cost runs; None: the default 16 (32 evaluations)
    rerank_memory_steps: int = 2  # solver steps of the memory runs (peak memory does not grow with steps)
    rerank_memory_rankers: list[str] = field(default_factory=lambda: ["clap"])
    cluster_seconds: float = 20.0  # one stream through the Ray backend, 1 vs 2 replicas
    cluster_repeats: int = 3
    reliability_requests: int = 1100  # hostile and valid requests against a server process (issue 19)
    reliability_sigterm_trials: int = 3
    stages_preset: str = "sam-audio-small"
    stages_seconds: float = 2.0
    stages_steps: int = 1  # midpoint steps; 16 is the official default (the ODE share scales with them)
    stages_pairs: int = 2
    stages_step_tiers: list[int] = field(default_factory=list)  # fewer steps than stages_steps, for fidelity
    stream_seconds: float = 60.0  # one stereo stream through the engine, default windows, per variant (#20)
    stream_channels: int = 2
    stream_steps: int = 1
    stream_pairs: int = 1
    quality_examples: int = 40  # held-out mixtures (samaudio.train.data.held_out)
    quality_seconds: float = 4.0
    quality_stream_seconds: float = 60.0  # one long mixture per class for the streaming figures
    quality_steps: int = 8  # midpoint steps of every separation in the quality figures
    daw_repeats: int = 2  # pairs of the 1 s selection, and cancels, through a loopback server (issue 17)
    prompts_seconds: float = 12.0  # a three-prompt stream (two 10 s windows) against a one-prompt one
    prompts_steps: int = 2  # midpoint steps: the mixture's encoding is what changes, not the solver
    prompts_repeats: int = 3

    @classmethod
    def for_run(cls, quick: bool, device: str, threads: int | None) -> "Settings":
        cuda = device.startswith("cuda")
        if quick:
            return cls(device=device, quick=True, threads=threads, rtf_warmup=cuda, bf16=cuda)
        return cls(
            device=device,
            quick=False,
            threads=threads,
            dit_repeats=7,
            memory_stand_in=False,
            transport_seconds=600.0,
            transport_repeats=7,
            serving_seconds=30.0,
            serving_chunk_seconds=STREAM_DEFAULTS.chunk_seconds,
            serving_overlap_seconds=STREAM_DEFAULTS.overlap_seconds,
            serving_repeats=6,
            latency_repeats=6,
            rtf_presets=["sam-audio-small", "sam-audio-base", "sam-audio-large"] if cuda else
            ["sam-audio-small", "sam-audio-base"],
            rtf_seconds=10.0,
            rtf_repeats=3 if cuda else 1,
            rtf_warmup=cuda,
            bf16=cuda,
            rerank_seconds=10.0,
            rerank_repeats=3,
            rerank_steps=None,
            rerank_memory_rankers=["clap", "imagebind"],
            stages_seconds=10.0,
            stages_steps=16,
            stages_pairs=5,
            stages_step_tiers=[8, 4, 2],
            stream_steps=16,
            stream_pairs=3 if cuda else 1,
            daw_repeats=5,
            prompts_steps=16,
            prompts_repeats=5,
        )


# ----------------------------------------------------------------------------------------------------------
# The measurements: name -> function of the settings returning figures


def run_dit(s: Settings) -> dict[str, Any]:
    import torch

    from bench.dit import measure_dit_efficiency

    out = measure_dit_efficiency(s.dit_preset, device=s.device, repeats=s.dit_repeats)
    if s.bf16:
        out.update(measure_dit_efficiency(s.dit_preset, device=s.device, dtype=torch.bfloat16, repeats=s.dit_repeats))
    return out


def run_memory(s: Settings) -> dict[str, Any]:
    from bench.memory import measure_peak_rss

    return measure_peak_rss(
        s.memory_short_seconds, s.memory_long_seconds, stand_in=s.memory_stand_in, device=s.device, threads=s.threads
    )


def run_transport(s: Settings) -> dict[str, Any]:
    from bench.transport import measure_transport

    return measure_transport(s.transport_seconds, s.transport_repeats, device=s.device, threads=s.threads)


def run_serving(s: Settings) -> dict[str, Any]:
    from bench.overhead import measure_serving

    return measure_serving(
        overhead_seconds=s.serving_seconds,
        chunk_seconds=s.serving_chunk_seconds,
        overlap_seconds=s.serving_overlap_seconds,
        repeats=s.serving_repeats,
        latency_repeats=s.latency_repeats,
        device=s.device,
        threads=s.threads,
    )


def run_rtf(s: Settings) -> dict[str, Any]:
    import torch

    from bench.rtf import measure_separate_rtf

    out = measure_separate_rtf(
        s.rtf_presets, s.rtf_seconds, device=s.device, repeats=s.rtf_repeats, warmup=s.rtf_warmup
    )
    if s.bf16:
        out.update(
            measure_separate_rtf(
                s.rtf_presets, s.rtf_seconds, device=s.device, dtype=torch.bfloat16, repeats=s.rtf_repeats,
                warmup=s.rtf_warmup,
            )
        )
    return out


def run_rerank(s: Settings) -> dict[str, Any]:
    from bench.rerank import measure_ranker_memory, measure_rerank_cost

    out = measure_rerank_cost(
        s.rerank_preset, s.rerank_seconds, s.rerank_candidates, s.rerank_repeats, device=s.device, steps=s.rerank_steps
    )
    out.update(
        measure_ranker_memory(
            s.rerank_preset, s.rerank_seconds, s.rerank_candidates, s.rerank_memory_steps,
            rankers=tuple(s.rerank_memory_rankers), device=s.device, threads=s.threads,
        )
    )
    return out


def run_quality(s: Settings) -> dict[str, Any]:
    from bench.quality import measure_gate_effect, measure_server_memory, measure_stream_candidates_cost

    common = dict(
        preset=s.rerank_preset, seconds=s.serving_seconds, chunk=s.serving_chunk_seconds,
        overlap=s.serving_overlap_seconds, steps=s.rerank_memory_steps,
    )
    out = measure_stream_candidates_cost(
        candidates=s.rerank_candidates, repeats=s.rerank_repeats, device=s.device, **common
    )
    out.update(measure_gate_effect(repeats=s.rerank_repeats, device=s.device, **common))
    out.update(measure_server_memory(**common))
    from bench.separation import measure_separation

    out.update(
        measure_separation(s.quality_examples, s.quality_seconds, s.quality_stream_seconds, s.quality_steps)
    )
    return out


def run_cluster(s: Settings) -> dict[str, Any]:
    from bench.cluster import measure_cluster

    return measure_cluster(seconds=s.cluster_seconds, repeats=s.cluster_repeats, threads=s.threads or 1)


def run_reliability(s: Settings) -> dict[str, Any]:
    from bench.reliability import measure_reliability

    return measure_reliability(requests=s.reliability_requests, sigterm_trials=s.reliability_sigterm_trials)


def run_stages(s: Settings) -> dict[str, Any]:
    from bench.stages import STREAM_VARIANTS, measure_stages, measure_stream_stages

    out = measure_stages(
        s.stages_preset, s.stages_seconds, s.stages_steps, s.stages_pairs, s.stages_step_tiers, device=s.device
    )
    out.update(
        measure_stream_stages(
            s.stages_preset, s.stream_seconds, s.stream_steps, s.stream_pairs, STREAM_VARIANTS, s.device,
            s.stream_channels,
        )
    )
    return out


def run_daw(s: Settings) -> dict[str, Any]:
    from bench.daw import ROOT, measure_cancel, measure_short_selection

    out = measure_short_selection(s.daw_repeats, s.threads)
    out.update(measure_cancel([ROOT], s.daw_repeats, s.threads))
    return out


def run_prompts(s: Settings) -> dict[str, Any]:
    from bench.prompts import ROOT, measure_prompts

    return measure_prompts([ROOT], s.prompts_seconds, s.prompts_steps, s.prompts_repeats, s.threads)


MEASUREMENTS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "dit": run_dit,
    "memory": run_memory,
    "transport": run_transport,
    "serving": run_serving,  # grpc_overhead_ratio and first_audio_latency_ratio
    "rtf": run_rtf,
    "rerank": run_rerank,  # K candidates vs one, peak memory with a ranker loaded vs without
    "quality": run_quality,  # streaming: K candidates per window vs one, the span gate, server memory with parts;
    # separation quality of samaudio-demo (held-out SI-SDRi, codec ceiling, windows and seams)
    "cluster": run_cluster,  # the Ray Serve backend ([cluster] extra): replicas, front-door overhead
    "reliability": run_reliability,  # hostile clients against a server process
    "stages": run_stages,  # separate() per stage before / after #20, target-only, residual-free, bf16; a stream
    "daw": run_daw,  # a 1 s selection with and without its stated length, cancel-to-freed (issue 17)
    "prompts": run_prompts,  # a three-prompt stream against a one-prompt one, codec rows encoded (issue 17)
}


# ----------------------------------------------------------------------------------------------------------
# Output


def verdict(key: str, value: Any) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}  {'ok' if ok else 'SHORT'}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def table(figures: dict[str, Any]) -> str:
    rows = [(k, _fmt(v), verdict(k, v)) for k, v in figures.items() if k not in ("machine", "settings", "errors")]
    width = max(len(k) for k, _, _ in rows) if rows else 10
    lines = [f"{'figure':<{width}}  {'value':<14}  target"]
    lines += [f"{k:<{width}}  {v:<14}  {t}".rstrip() for k, v, t in rows]
    machine = figures.get("machine", {})
    lines.append(
        f"machine: {machine.get('cpu')}, {machine.get('logical_cpus')} logical CPUs, torch {machine.get('torch')} "
        f"with {machine.get('torch_threads')} threads, device {machine.get('device')}"
        + (f" ({machine['gpu']})" if "gpu" in machine else "")
        + f", load average at start {machine.get('load_average_at_start')}"
    )
    return "\n".join(lines)


def _finite(figures: dict[str, Any]) -> bool:
    values = [v for k, v in figures.items() if k in TARGETS]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="sizes that finish in minutes on a 2-core CPU")
    parser.add_argument("--out", type=Path, default=None, help="write the figures to this JSON file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds bf16 figures)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads here and in child processes "
        "(default: torch's, one per core; the server measurements leave one core to the client)"
    )
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    import torch

    from bench.machine import describe_machine, load_average

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(MEASUREMENTS) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {unknown[0]!r}; choose from {', '.join(MEASUREMENTS)}")
    settings = Settings.for_run(args.quick, args.device, args.threads)

    started = time.perf_counter()
    figures: dict[str, Any] = {"machine": describe_machine(args.device)}
    errors: dict[str, str] = {}
    for name in names:
        logger.info("measuring %s", name)
        t = time.perf_counter()
        try:
            figures.update(MEASUREMENTS[name](settings))
        except Exception as e:  # noqa: BLE001 - one failing measurement must not lose the others
            logger.exception("measurement %s failed", name)
            errors[name] = f"{type(e).__name__}: {e}"
        logger.info("%s took %.1f s", name, time.perf_counter() - t)
    figures["machine"]["load_average_at_end"] = load_average()
    figures["settings"] = asdict(settings)
    figures["elapsed_seconds"] = time.perf_counter() - started
    if errors:
        figures["errors"] = errors
    print(table(figures))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        logger.info("wrote %s", args.out)
    return 1 if errors or not _finite(figures) else 0


if __name__ == "__main__":
    sys.exit(main())
