"""The Ray Serve backend: windows per second on 1 and 2 replicas, and the front door's cost per window.

A local Ray cluster (logical GPUs, so replicas run on this machine's CPUs) serves the demo-tiny model, saved
once to a folder so that every replica and this process hold the same weights. Two applications are deployed
side by side, one with one replica and one with two, so the figures alternate in pairs without redeploying:

- `cluster_windows_per_second`: {"local", "ray_1", "ray_2"}: one stream's windows through the in-process
  worker, and through the deployment with one and with two replicas (the same windows each time);
- `cluster_speedup_2_vs_1`: median of the per-pair ratios ray_1 time / ray_2 time;
- `cluster_overhead_ms_per_window`: median over pairs of (ray_1 time - local time) / windows: what the front
  door, the handle round trip, the object store and `@serve.batch` add to each window on one replica.

On a 2-core CPU both replicas share the same two cores, so two replicas cannot be much faster than one: the
figure says how the backend behaves, not what two GPUs give (the README's scaling model does that).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from bench.common import DEMO_SEED, bench_signal, build_demo_model, torch_threads


def _stream(model: Any, processor: Any, worker: Any, audio: Any, chunk: float, overlap: float, steps: int) -> int:
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model, processor, "a chirp", sample_rate=48000, channels=audio.shape[1], chunk_seconds=chunk,
        overlap_seconds=overlap, ode_opt={"method": "midpoint", "options": {"step_size": 1.0 / steps}},
        worker=worker, max_batch=8,
    )
    sep.push(audio)
    sep.finish()
    return sep.counters.windows_done


def measure_cluster(
    seconds: float = 20.0, chunk_seconds: float = 2.0, overlap_seconds: float = 0.5, steps: int = 2,
    repeats: int = 3, threads: int = 1, gpus_per_replica: float = 1.0,
) -> dict[str, Any]:
    """The figures above. Connects to a running Ray cluster if this process has one (it is left running), else
    starts a local one with three logical GPUs and shuts it down at the end."""
    import ray
    from ray import serve

    from samaudio.streaming import LocalWorker
    from samaudio_server.cluster import RayWorker, ReplicaSpec, deploy

    model, processor = build_demo_model()
    audio = bench_signal(0, round(seconds * 48000), 2)  # (n, 2)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        own = not ray.is_initialized()
        if own:
            ray.init(num_cpus=2, num_gpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            spec = ReplicaSpec(model=folder, windows_per_batch=4, threads=threads)
            one = RayWorker(deploy(spec, replicas=1, name="bench-1", gpus_per_replica=gpus_per_replica), app="bench-1")
            two = RayWorker(deploy(spec, replicas=2, name="bench-2", gpus_per_replica=gpus_per_replica), app="bench-2")
            workers = {"local": LocalWorker(model, processor), "ray_1": one, "ray_2": two}
            times: dict[str, list[float]] = {name: [] for name in workers}
            windows = 0
            with torch_threads(threads):  # the in-process worker computes with as many threads as a replica
                for w in workers.values():  # warm-up: first calls load kernels and fill caches
                    _stream(model, processor, w, audio[: 48000 * 3], chunk_seconds, overlap_seconds, steps)
                for _ in range(repeats):
                    for name, w in workers.items():
                        start = time.perf_counter()
                        windows = _stream(model, processor, w, audio, chunk_seconds, overlap_seconds, steps)
                        times[name].append(time.perf_counter() - start)
            replicas_used = len(two.windows_by_replica)
            one.close()
            two.close()
        finally:
            for app in ("bench-1", "bench-2"):
                serve.delete(app)
            if own:
                serve.shutdown()
                ray.shutdown()
    speedups = [a / b for a, b in zip(times["ray_1"], times["ray_2"])]
    overheads = [(r - l) / windows * 1000 for r, l in zip(times["ray_1"], times["local"])]
    return {
        "cluster_windows_per_second": {name: windows / statistics.median(t) for name, t in times.items()},
        "cluster_speedup_2_vs_1": statistics.median(speedups),
        "cluster_speedup_spread": {"min": min(speedups), "max": max(speedups)},
        "cluster_overhead_ms_per_window": statistics.median(overheads),
        "cluster_overhead_spread_ms": {"min": min(overheads), "max": max(overheads)},
        "cluster_windows_per_stream": windows,
        "cluster_replicas_used_by_one_stream": replicas_used,
        "cluster_seed": DEMO_SEED,
    }
