"""grpc_overhead_ratio and first_audio_latency_ratio: what serving adds to the streaming engine.

Both use the demo-tiny model with random weights: once in this process, once in a server child process
(`bench.serve`, same seed, so the same weights) on loopback. Both compute with `common.serving_threads`
threads (one core is left to the client, which shares this machine as it would not in a deployment).

- `grpc_overhead_ratio`: wall time of `Client.separate` of a stereo clip through the server ÷ wall time of
  the same clip pushed through an in-process `StreamingSeparator` in the client's block size. The two runs
  alternate; the figure is the median of the per-pair ratios. The stems of both are compared as a check
  that the same model ran (`grpc_stems_max_abs_diff`).
- `first_audio_latency_ratio`: a stream sends audio at real-time pace (a block of `LATENCY_BLOCK_SECONDS`
  every `LATENCY_BLOCK_SECONDS`, as a DAW would); the time from sending the first block to receiving the
  first stem block, ÷ (one window's duration + one window's compute). A window's compute is measured in this
  process, alternating with the streams: a fresh `StreamingSeparator` given exactly one window of audio in
  one push, text encoding included (the server's first window encodes the text too).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Iterator

import numpy as np

from bench.common import MODEL_RATE, bench_signal, build_demo_model, median_ratio, serving_threads, torch_threads
from bench.serve import ServerProcess

CHANNELS = 2
BLOCK_SECONDS = 0.25  # the client's default send size
LATENCY_BLOCK_SECONDS = 0.01  # 480 frames: a DAW-sized buffer, so pacing itself adds almost nothing
DESCRIPTION = "a chirp"


def measure_serving(
    *,
    overhead_seconds: float,
    chunk_seconds: float,
    overlap_seconds: float,
    repeats: int = 3,
    latency_repeats: int = 3,
    device: str = "cpu",
    threads: int | None = None,
    solver_steps: int | None = None,
    inline: bool = False,
) -> dict[str, Any]:
    """Both figures against one server child; windows of `chunk_seconds` overlapping by `overlap_seconds`.

    `inline` serves from this process instead (for tests)."""
    threads = serving_threads(threads)  # the server child's and the in-process engine's
    model, processor = build_demo_model(device)
    options: dict[str, Any] = {"chunk_seconds": chunk_seconds, "overlap_seconds": overlap_seconds}
    if solver_steps is not None:
        options["solver_steps"] = solver_steps
    with ServerProcess(threads=threads, device=device, inline=inline) as port, torch_threads(threads):
        result = _overhead(model, processor, port, overhead_seconds, options, repeats)
        result.update(_latency(model, processor, port, options, latency_repeats))
    result.update(
        {
            "serving_model": "demo-tiny (random weights)",
            "serving_chunk_seconds": chunk_seconds,
            "serving_overlap_seconds": overlap_seconds,
            "serving_solver_steps": solver_steps if solver_steps is not None else "default (16 midpoint steps)",
            "serving_threads": threads,
        }
    )
    return result


def _ode_opt(options: dict[str, Any]) -> dict[str, Any] | None:
    steps = options.get("solver_steps")
    from samaudio.model.model import midpoint_ode_opt

    return None if steps is None else midpoint_ode_opt(steps)


def _separator(model: Any, processor: Any, options: dict[str, Any]) -> Any:
    from samaudio.streaming import StreamingSeparator

    return StreamingSeparator(
        model,
        processor,
        DESCRIPTION,
        sample_rate=MODEL_RATE,
        channels=CHANNELS,
        chunk_seconds=options["chunk_seconds"],
        overlap_seconds=options["overlap_seconds"],
        ode_opt=_ode_opt(options),
    )


# ----------------------------------------------------------------------------------------------------------
# grpc_overhead_ratio


def _overhead(model: Any, processor: Any, port: int, seconds: float, options: dict, repeats: int) -> dict[str, Any]:
    from samaudio_client import Client

    audio = bench_signal(0, round(seconds * MODEL_RATE), CHANNELS)  # (frames, 2)
    step = round(BLOCK_SECONDS * MODEL_RATE)

    def in_process() -> np.ndarray:
        sep = _separator(model, processor, options)
        blocks = [b for i in range(0, len(audio), step) for b in sep.push(audio[i : i + step])] + sep.finish()
        return np.concatenate([b.target for b in blocks])

    with Client(f"127.0.0.1:{port}", block_seconds=BLOCK_SECONDS) as client:
        served = lambda: client.separate(audio, MODEL_RATE, DESCRIPTION, **options).target  # noqa: E731
        # warm-up pair, which also checks that both ran the same model on the same audio
        diff = float(np.abs(served() - in_process()).max())
        walls: dict[str, list[float]] = {"grpc": [], "local": []}
        pair = [("grpc", served), ("local", in_process)]
        for i in range(repeats):
            for name, run in pair if i % 2 == 0 else pair[::-1]:  # alternate which goes first
                start = time.perf_counter()
                run()
                walls[name].append(time.perf_counter() - start)
    return {
        "grpc_overhead_ratio": median_ratio(walls["grpc"], walls["local"]),
        "grpc_stream_seconds": statistics.median(walls["grpc"]),
        "local_stream_seconds": statistics.median(walls["local"]),
        "grpc_overhead_audio_seconds": seconds,
        "grpc_stems_max_abs_diff": diff,
    }


# ----------------------------------------------------------------------------------------------------------
# first_audio_latency_ratio


def _latency(model: Any, processor: Any, port: int, options: dict, repeats: int) -> dict[str, Any]:
    window = options["chunk_seconds"]

    def one_window_compute() -> float:
        audio = bench_signal(0, round(window * MODEL_RATE), CHANNELS)
        sep = _separator(model, processor, options)
        start = time.perf_counter()
        blocks = sep.push(audio)
        elapsed = time.perf_counter() - start
        assert blocks and sep.counters.windows_done == 1, (len(blocks), sep.counters.windows_done)
        return elapsed

    one_window_compute()  # warm-up
    firsts, computes = [], []
    for i in range(repeats):
        if i % 2:  # alternate which goes first
            computes.append(one_window_compute())
        firsts.append(_first_block_seconds(port, options, window))
        if not i % 2:
            computes.append(one_window_compute())
    return {
        "first_audio_latency_ratio": median_ratio(firsts, [window + c for c in computes]),
        "first_audio_seconds": statistics.median(firsts),
        "window_compute_seconds": statistics.median(computes),
        "window_seconds": window,
    }


def _first_block_seconds(port: int, options: dict, window: float) -> float:
    """Seconds from sending the first audio block to receiving the first stem block, audio paced in real time."""
    import grpc

    from samaudio.v1 import separation_pb2 as pb
    from samaudio.v1 import separation_pb2_grpc as pb_grpc

    step = round(LATENCY_BLOCK_SECONDS * MODEL_RATE)
    total = round((window + 60.0) * MODEL_RATE)  # more than the first window needs; the call is cancelled first
    config = pb.SeparationConfig(
        description=DESCRIPTION,
        sample_rate_hertz=MODEL_RATE,
        channel_count=CHANNELS,
        sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE,
        **options,
    )
    sent_first: list[float] = []
    stop = threading.Event()

    def requests() -> Iterator[pb.SeparateRequest]:
        yield pb.SeparateRequest(config=config)
        for k, start in enumerate(range(0, total, step)):
            if stop.is_set():
                return
            if sent_first:
                delay = sent_first[0] + k * LATENCY_BLOCK_SECONDS - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)
            block = bench_signal(start, min(step, total - start), CHANNELS)
            if not sent_first:
                sent_first.append(time.perf_counter())
            yield pb.SeparateRequest(audio_content=block.tobytes())

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        call = pb_grpc.SeparationServiceStub(ch).Separate(requests())
        try:
            for response in call:
                if response.WhichOneof("streaming_response") == "stem_block":
                    return time.perf_counter() - sent_first[0]
        finally:
            stop.set()
            call.cancel()
    raise RuntimeError("the stream ended without a stem block")
