"""Shared pieces of the benchmarks: timing, the demo model, generated audio, and the pass-through stand-in.

Timing on a shared machine is noisy, so every ratio is measured side by side: the two things compared run
in alternation, repeated, and the median of the per-pair ratios is reported (noise that lasts longer than
one pair cancels in the ratio).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from samaudio.defaults import STREAM_DEFAULTS

MODEL_RATE = 48000  # the model's sample rate; benchmark audio is sent at this rate (no resampling)
DEMO_PRESET = "demo-tiny"
DEMO_SEED = 0


def sync(device: str) -> None:
    """Wait for queued device work, so wall-clock times cover it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call, device work included."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (None: unchanged) inside the block."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def serving_threads(threads: int | None) -> int:
    """Threads for a server and its in-process counterpart when a client shares the machine: `threads` if
    given, else one core fewer than the machine has, left to the client. With every core computing, the
    client's work would preempt one of the server's threads, and each of its ops would wait for it; a client
    on another machine, as deployed, takes nothing from the server."""
    return threads or max(1, (os.cpu_count() or 1) - 1)


def side_by_side(
    fns: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu", warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, the functions run in rotation `repeats` times after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[0])
    return times


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the pairwise ratios of two side-by-side series."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def bench_signal(first_frame: int, frames: int, channels: int, rate: int = MODEL_RATE, seed: int = 0) -> np.ndarray:
    """Frames [first_frame, first_frame + frames) of an endless test signal: (frames, channels) float32.

    A slow chirp per channel plus noise; any block can be made on its own, so a long input is generated
    block by block and never held whole (memory benchmarks must not measure their own input).
    """
    t = (first_frame + np.arange(frames, dtype=np.float64))[:, None] / rate  # (frames, 1)
    freqs = 220.0 * (1 + np.arange(channels))[None, :]  # (1, channels)
    tone = 0.3 * np.sin(2 * np.pi * freqs * t * (1 + 0.01 * np.sin(0.1 * t)))
    noise = np.random.default_rng((seed, first_frame)).standard_normal((frames, channels))
    return (tone + 0.03 * noise).astype(np.float32)


def signal_blocks(seconds: float, block_seconds: float, channels: int, rate: int = MODEL_RATE) -> Iterator[np.ndarray]:
    """`seconds` of `bench_signal` in consecutive blocks of `block_seconds` (the last one short)."""
    total, step = round(seconds * rate), max(1, round(block_seconds * rate))
    for start in range(0, total, step):
        yield bench_signal(start, min(step, total - start), channels, rate)


def build_demo_model(device: str = "cpu", dtype: Any = None):
    """The demo-tiny preset with random weights (seed 0) and its processor, on `device`."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    torch.manual_seed(DEMO_SEED)
    model = SAMAudio.from_config(get_preset(DEMO_PRESET).build_config(), random_text_encoder=True)
    model = model.to(device=device, dtype=dtype)
    return model, SAMAudioProcessor(model.hop_length, model.sample_rate)


def passthrough_stems(jobs: Sequence[Any]) -> list[Any]:
    """The model step replaced by a pass-through: each window's input is its target, silence its residual.

    A bench-only stand-in, so that what is timed is everything but the model: the engine, the server, the
    wire and the client.
    """
    from samaudio.streaming import WindowStems

    return [WindowStems(target=job.audio, residual=job.audio.new_zeros(job.audio.shape), nfe=0) for job in jobs]


@dataclass
class PassThroughWorker:
    """A `WindowWorker` that runs `passthrough_stems` in the caller's thread (a completed future)."""

    def submit(self, jobs: Sequence[Any]):
        import concurrent.futures

        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(passthrough_stems(jobs))
        return future


class LoopbackServer:
    """A samaudio server on 127.0.0.1 (free port) in this process; `with LoopbackServer(...) as port:`.

    `run_batch` replaces the model step of the server's device worker (e.g. `passthrough_stems`); None runs
    the model as a deployed server does.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        chunk_seconds: float,
        overlap_seconds: float,
        max_batch: int = STREAM_DEFAULTS.windows_per_device_batch,
        run_batch: Callable[[Sequence[Any]], list[Any]] | None = None,
    ):
        self.model, self.processor = model, processor
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap_seconds
        self.max_batch = max_batch
        self.run_batch = run_batch
        self.server: Any = None

    def __enter__(self) -> int:
        from samaudio_server.server import create_server
        from samaudio.defaults import StreamDefaults
        from samaudio_server.servicer import Limits
        from samaudio_server.worker import BatchingWorker

        worker = BatchingWorker(self.run_batch, max_batch=self.max_batch) if self.run_batch is not None else None
        self.server, port = create_server(
            "127.0.0.1:0",
            model=self.model,
            processor=self.processor,
            model_name="bench",
            limits=Limits(max_stream_seconds=0),  # benchmark streams may be long
            defaults=StreamDefaults(
                chunk_seconds=self.chunk_seconds,
                overlap_seconds=self.overlap_seconds,
                windows_per_stream_call=self.max_batch,
                windows_per_device_batch=self.max_batch,
            ),
            worker=worker,
        )
        self.server.start()
        return port

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a child process that runs against the samaudio of checkout `tree` (its library and
    server on the path), for before/after measurements across commits."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "server")])}


def tree_name(tree: Path) -> str:
    """A checkout's short commit (its folder's name outside git), to key its figures."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return commit.stdout.strip() if commit.returncode == 0 else tree.name


def report(figures: dict[str, Any], out: Path | None) -> None:
    """A bench module's figures as JSON: printed, and written to `out` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n")
