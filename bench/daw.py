"""What a DAW user waits for (issue 17): a short selection, and a cancel.

    python -m bench.daw [--repeats N] [--threads N] [--cancel-tree DIR ...] [--out FILE.json]
    python -m bench --only daw

**A 1 s selection.** The demo-tiny model (random weights, the real architecture at a small size) behind a
loopback server with the stream defaults (10 s windows, 2 s overlap, 16 solver steps) separates 1 s of stereo
at 44.1 kHz, sent as the REAPER script and the command line send it, twice in alternation: without
`total_frames` (how every client streamed before: one full 10 s window, the selection padded with silence)
and with it (one window of the selection's own length). Reported: the medians and spreads of the seconds per
stream, and the median of the per-pair ratios.

**Cancel to freed.** The same server separates 6 s in one window (`total_frames` of 6 s, a 10 s chunk);
once the window is under way (a fixed fraction of the window's measured time after the half-close) the client
cancels, and the time from the cancel to the server's stream count dropping to zero is measured. Each
`--cancel-tree DIR` runs the same measurement in a child process against the samaudio found in DIR (a checkout of
another commit, for a before/after); by default only the working tree's. Reported per tree: the median and
spread of cancel-to-freed seconds, and the window's uncancelled time for scale.

**Cancel inside a shared call.** Streams A and B half-close while a third stream holds the device, so the
server's device worker takes their windows into one model call. A first round times that call uncancelled; then
A is cancelled at 70 % of that time after the third stream ends (in the codec's decode, where no progress message
wakes the stream), and the time until A's slot is free (B still running) is measured. Reported: the median and
spread, the shared call's time, and in how many repeats A and B really shared a call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE, CHANNELS = 44100, 2
SELECTION_SECONDS = 1.0
CANCEL_SECONDS = 6.0
CANCEL_AT = 0.3  # of the window's uncancelled time, after the half-close
SHARED_CANCEL_AT = 0.7  # of the shared call's uncancelled time: in the codec's decode, which sends no progress


def _signal(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(round(seconds * rate))[:, None] / rate
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t * np.arange(1, channels + 1)) + 0.03 * rng.standard_normal(
        (len(t), channels))).astype(np.float32)  # fmt: skip


def _server(threads: int | None) -> tuple[Any, int]:
    """The demo-tiny model on loopback with the default stream settings -> (server, port)."""
    import torch

    from bench.common import build_demo_model
    from samaudio_server.server import create_server

    if threads:
        torch.set_num_threads(threads)
    model, processor = build_demo_model()
    server, port = create_server("127.0.0.1:0", model=model, processor=processor)
    server.start()
    return server, port


def _requests(config: Any, audio: np.ndarray, block: int) -> Any:
    from samaudio.v1 import separation_pb2 as pb

    yield pb.SeparateRequest(config=config)
    for i in range(0, len(audio), block):
        yield pb.SeparateRequest(audio_content=audio[i : i + block].astype("<f4").tobytes())


def _held_requests(config: Any, audio: np.ndarray, block: int, release: threading.Event) -> Any:
    """The stream's requests, half-closed only once `release` is set (so its window waits for it)."""
    yield from _requests(config, audio, block)
    release.wait(600)


def _config(audio: np.ndarray, rate: int, total: bool, chunk: float | None = None, **fields: Any) -> Any:
    from samaudio.v1 import separation_pb2 as pb

    config = pb.SeparationConfig(
        description="a chirp", sample_rate_hertz=rate, channel_count=audio.shape[1],
        sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE, **fields,
    )  # fmt: skip
    if total:
        config.total_frames = len(audio)
    if chunk is not None:  # else the server's default window and overlap
        config.chunk_seconds, config.overlap_seconds = chunk, chunk / 5
    return config


def _stream_seconds(
    stub: Any, audio: np.ndarray, rate: int, total: bool, chunk: float | None = None
) -> tuple[float, int]:
    """(seconds from the first request to the summary, windows) of one stream of `audio`."""
    start = time.perf_counter()
    windows = 0
    for response in stub.Separate(_requests(_config(audio, rate, total, chunk), audio, rate // 4)):
        if response.WhichOneof("streaming_response") == "summary":
            windows = response.summary.windows
    return time.perf_counter() - start, windows


def measure_short_selection(
    repeats: int = 5, threads: int | None = None, seconds: float = SELECTION_SECONDS, chunk: float | None = None
) -> dict[str, Any]:
    """`chunk`: the window the stream asks for (None: the server's default); smaller only to keep tests fast."""
    import grpc

    from samaudio.v1 import separation_pb2_grpc as pb_grpc

    audio = _signal(seconds, RATE, CHANNELS)
    server, port = _server(threads)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SeparationServiceStub(channel)
            for total in (False, True):  # warm-up
                _stream_seconds(stub, audio, RATE, total, chunk)
            full, planned, windows = [], [], set()
            for _ in range(repeats):  # alternating pairs
                seconds, n = _stream_seconds(stub, audio, RATE, total=False, chunk=chunk)
                full.append(seconds)
                seconds, m = _stream_seconds(stub, audio, RATE, total=True, chunk=chunk)
                planned.append(seconds)
                windows.add((n, m))
    finally:
        server.stop(0)
    return {
        "short_selection_seconds_full_window": statistics.median(full),
        "short_selection_seconds_full_window_spread": [min(full), max(full)],
        "short_selection_seconds_planned": statistics.median(planned),
        "short_selection_seconds_planned_spread": [min(planned), max(planned)],
        "short_selection_speedup": statistics.median(a / b for a, b in zip(full, planned)),
        "short_selection_windows": sorted(windows),
    }


def _cancel_child(
    repeats: int, threads: int | None, seconds: float = CANCEL_SECONDS, chunk: float | None = None
) -> dict[str, Any]:
    """In this process, against whatever samaudio is importable: cancel-to-freed seconds."""
    import grpc

    from samaudio.v1 import separation_pb2_grpc as pb_grpc

    rate = 48000
    audio = _signal(seconds, rate, 1)
    server, port = _server(threads)
    gate = server.servicer.gate
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SeparationServiceStub(channel)
            _stream_seconds(stub, audio, rate, total=False, chunk=chunk)  # warm-up
            window = statistics.median([_stream_seconds(stub, audio, rate, False, chunk)[0] for _ in range(2)])
            freed = []
            for _ in range(repeats):
                call = stub.Separate(_requests(_config(audio, rate, False, chunk), audio, rate))
                next(call)  # accepted: the audio is on its way, the window starts when it is all there
                time.sleep(CANCEL_AT * window)
                cancelled = time.perf_counter()
                call.cancel()
                while gate.active:
                    time.sleep(0.001)
                freed.append(time.perf_counter() - cancelled)
                time.sleep(0.2)
            shared, call_seconds, together = _shared_cancel(stub, server, audio, rate, window, repeats, chunk)
    finally:
        server.stop(0)
    return {
        "cancel_to_freed_seconds": statistics.median(freed),
        "cancel_to_freed_seconds_spread": [min(freed), max(freed)],
        "window_seconds": window,
        "shared_call_seconds": call_seconds,
        "shared_cancel_to_freed_seconds": statistics.median(shared),
        "shared_cancel_to_freed_seconds_spread": [min(shared), max(shared)],
        "shared_cancel_calls_shared": f"{together} of {repeats}",
    }


def _shared_cancel(
    stub: Any, server: Any, audio: np.ndarray, rate: int, window: float, repeats: int, chunk: float | None
) -> tuple[list[float], float, int]:
    """Cancel-to-freed of stream A while its window shares one model call with stream B's (see the docstring):
    (seconds per repeat, the shared call's uncancelled seconds, repeats in which the call was shared)."""
    _, call_seconds, _ = _shared_round(stub, server, audio, rate, window, chunk, cancel_after=None)
    freed, together = [], 0
    for _ in range(repeats):
        seconds, _, shared = _shared_round(stub, server, audio, rate, window, chunk, SHARED_CANCEL_AT * call_seconds)
        freed.append(seconds)
        together += shared
    return freed, call_seconds, together


def _shared_round(
    stub: Any, server: Any, audio: np.ndarray, rate: int, window: float, chunk: float | None,
    cancel_after: float | None,
) -> tuple[float | None, float, bool]:
    """One round: (A's cancel-to-freed seconds or None uncancelled, seconds from the plug's end to B's, shared)."""
    gate, worker = server.servicer.gate, server.servicer.worker
    releases = [threading.Event(), threading.Event()]
    calls = [stub.Separate(_held_requests(_config(audio, rate, False, chunk), audio, rate, r)) for r in releases]
    for call in calls:
        next(call)  # accepted; their audio waits for the half-close
    while gate.active < 2:  # both streams are in
        time.sleep(0.001)
    worker.largest_batch = 0  # this round's calls only
    plug = stub.Separate(_requests(_config(audio, rate, False, chunk), audio, rate))
    next(plug)
    time.sleep(0.3 * window)  # the plug's window is on the device
    for release in releases:
        release.set()
    for _ in plug:  # the plug ends; A's and B's windows, queued meanwhile, run as one call
        pass
    started, freed = time.perf_counter(), None
    if cancel_after is not None:
        time.sleep(cancel_after)
        cancelled = time.perf_counter()
        calls[0].cancel()
        while gate.active > 1:
            time.sleep(0.001)
        freed = time.perf_counter() - cancelled
    for call in calls[1:] if cancel_after is not None else calls:
        for _ in call:  # runs to its end
            pass
    seconds = time.perf_counter() - started
    time.sleep(0.2)
    return freed, seconds, worker.largest_batch >= 2


def measure_cancel(trees: list[Path], repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    """`_cancel_child` in a child process per tree (its samaudio, server and bench on the path)."""
    from bench.common import tree_env, tree_name

    out: dict[str, Any] = {}
    for tree in trees:
        tree = tree.resolve()
        args = [sys.executable, str(Path(__file__).resolve()), "--cancel-child", "--repeats", str(repeats)]
        if threads:
            args += ["--threads", str(threads)]
        done = subprocess.run(
            args, cwd=tree, env=tree_env(tree), capture_output=True, text=True, check=True, timeout=3600
        )
        out[f"cancel_{tree_name(tree)}"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.daw", description=__doc__.split("\n\n")[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cancel-tree", type=Path, action="append", default=[], metavar="DIR")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cancel-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cancel_child:
        print(json.dumps(_cancel_child(args.repeats, args.threads)))
        return 0
    from bench.common import report
    from bench.machine import describe_machine

    figures: dict[str, Any] = {"machine": describe_machine("cpu")}
    figures.update(measure_short_selection(args.repeats, args.threads))
    figures.update(measure_cancel(args.cancel_tree or [ROOT], args.repeats, args.threads))
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
