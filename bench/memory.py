"""peak_rss_ratio_long_vs_short: the streaming engine's peak memory on a 10-minute vs a 1-minute stereo input.

Each length runs in a fresh process (`python -m bench.memory --seconds N ...`), which builds the model, streams
`N` seconds of 48 kHz stereo through a `StreamingSeparator` in blocks generated on the fly (the input is never
held whole), drops every stem block it gets back (as a client writing them to disk would), and reports its
peak resident set size (`peak_rss_bytes`: VmHWM, see there why not `ru_maxrss`). Flat memory means the ratio
stays near 1; `rss_growth_*` give the growth above the process's size once the model is built.

The model is the demo-tiny preset with random weights. `stand_in=True` replaces its window step with the
pass-through (`common.PassThroughWorker`): the engine's own buffers are then all that can grow, which makes
the test stricter (the model's constant working set no longer dilutes the ratio) and fast enough for
`--quick` on a CPU, where the real demo-tiny model takes about 20 s per 10-second window.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL_RATE, PassThroughWorker, build_demo_model, signal_blocks

CHANNELS = 2
BLOCK_SECONDS = 0.25  # the client's default send size
ROOT = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    On Linux the high-water mark of this process's own memory map (VmHWM): `ru_maxrss` would do, except that
    Linux carries the parent's peak into it across fork + exec, so a child started by a large benchmark
    process would report the parent's size. Elsewhere `ru_maxrss` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def stream_once(
    seconds: float, *, stand_in: bool, device: str = "cpu", solver_steps: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Stream `seconds` of stereo audio through the engine in this process; memory and time figures."""
    import torch

    from samaudio.model.model import midpoint_ode_opt
    from samaudio.streaming import StreamingSeparator

    if threads:
        torch.set_num_threads(threads)
    model, processor = build_demo_model(device)
    ode_opt = None if solver_steps is None else midpoint_ode_opt(solver_steps)
    sep = StreamingSeparator(
        model,
        processor,
        "a chirp",
        sample_rate=MODEL_RATE,
        channels=CHANNELS,
        ode_opt=ode_opt,
        worker=PassThroughWorker() if stand_in else None,
    )
    rss_ready = current_rss_bytes()
    start = time.perf_counter()
    frames_back = 0
    for block in signal_blocks(seconds, BLOCK_SECONDS, CHANNELS):
        frames_back += sum(b.frames for b in sep.push(block))
    frames_back += sum(b.frames for b in sep.finish())
    wall = time.perf_counter() - start
    if frames_back != sep.counters.frames_in:
        raise RuntimeError(f"the engine returned {frames_back} frames for {sep.counters.frames_in}")
    result = {
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_ready_bytes": rss_ready,  # after the model is built, before the first block
        "windows": sep.counters.windows_done,
        "wall_seconds": wall,
    }
    if device.startswith("cuda"):
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return result


def measure_peak_rss(
    short_seconds: float = 60.0,
    long_seconds: float = 600.0,
    *,
    stand_in: bool,
    device: str = "cpu",
    solver_steps: int | None = None,
    threads: int | None = None,
    inline: bool = False,
) -> dict[str, Any]:
    """Peak RSS of a long and a short stream, each in a fresh process, and their ratio.

    `inline` runs both streams in this process instead: the code paths without the child start-ups, for
    tests; the peaks are then this process's and the ratio means nothing."""
    if inline:
        short, long = (
            stream_once(s, stand_in=stand_in, device=device, solver_steps=solver_steps)
            for s in (short_seconds, long_seconds)
        )
    else:
        # Both children run at once: each reports only its own peak, and their start-ups overlap.
        short, long = _children([short_seconds, long_seconds], stand_in, device, solver_steps, threads)
    mib = 1024 * 1024
    result = {
        "peak_rss_ratio_long_vs_short": long["peak_rss_bytes"] / short["peak_rss_bytes"],
        "peak_rss_short_mib": short["peak_rss_bytes"] / mib,
        "peak_rss_long_mib": long["peak_rss_bytes"] / mib,
        # growth above the process's size once the model is loaded: the part the engine is responsible for
        "rss_growth_short_mib": (short["peak_rss_bytes"] - short["rss_ready_bytes"]) / mib,
        "rss_growth_long_mib": (long["peak_rss_bytes"] - long["rss_ready_bytes"]) / mib,
        "peak_rss_short_seconds": short_seconds,
        "peak_rss_long_seconds": long_seconds,
        "peak_rss_model": "demo-tiny (random weights), model step: "
        + ("pass-through stand-in" if stand_in else "real"),
    }
    if "peak_cuda_bytes" in long:
        result["peak_cuda_ratio_long_vs_short"] = long["peak_cuda_bytes"] / short["peak_cuda_bytes"]
    return result


def _children(
    lengths: list[float], stand_in: bool, device: str, solver_steps: int | None, threads: int | None
) -> list[dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    procs = []
    for seconds in lengths:
        cmd = [sys.executable, "-m", "bench.memory", "--seconds", str(seconds), "--device", device]
        if stand_in:
            cmd.append("--stand-in")
        if solver_steps is not None:
            cmd += ["--solver-steps", str(solver_steps)]
        if threads:
            cmd += ["--threads", str(threads)]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    for seconds, proc in zip(lengths, procs):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory child for {seconds} s failed (exit {proc.returncode}):\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one memory run of the streaming engine (a bench child process)")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stand-in", action="store_true")
    parser.add_argument("--solver-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    result = stream_once(
        args.seconds, stand_in=args.stand_in, device=args.device, solver_steps=args.solver_steps, threads=args.threads
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
