"""transport_realtime_factor: how fast audio crosses client -> server -> engine -> server -> client.

The model step is replaced by a pass-through stand-in (`common.passthrough_stems`, run by the server's own
device worker), so the figure is the ceiling that transport and the streaming engine put on any model:
audio seconds per wall second of 48 kHz stereo float32 through `samaudio_client.Client.separate` (default
block size) against a server in a child process on loopback. The server and the in-process engine below
compute with `common.serving_threads` threads, one core being left to the client.

Two figures beside it, measured in alternation with it, say where the time goes:
- `transport_echo_realtime_factor`: the same client and audio against a bare echo servicer (the wire alone:
  gRPC, protobuf, the client's decoding; no engine);
- `engine_realtime_factor`: the streaming engine alone in this process with the pass-through stand-in, fed
  the client's block size (no gRPC).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import MODEL_RATE, PassThroughWorker, bench_signal, build_demo_model, serving_threads, torch_threads
from bench.serve import ServerProcess
from samaudio.defaults import STREAM_DEFAULTS

CHANNELS = 2
# the server defaults: they set how often the engine stitches and answers
CHUNK_SECONDS = STREAM_DEFAULTS.chunk_seconds
OVERLAP_SECONDS = STREAM_DEFAULTS.overlap_seconds
BLOCK_SECONDS = 0.25  # the client's default send size


def measure_transport(
    seconds: float = 120.0,
    repeats: int = 3,
    device: str = "cpu",
    threads: int | None = None,
    block_seconds: float = BLOCK_SECONDS,
    inline: bool = False,
) -> dict[str, Any]:
    """Median audio seconds per wall second of `repeats` streams of `seconds` of 48 kHz stereo float32.

    `inline` serves from this process instead of child processes (for tests: the figures then share one
    interpreter between client and server)."""
    from samaudio.streaming import StreamingSeparator
    from samaudio_client import Client

    threads = serving_threads(threads)  # the server child's and the in-process engine's
    audio = bench_signal(0, round(seconds * MODEL_RATE), CHANNELS)  # (frames, 2) float32, held by the client
    model, processor = build_demo_model(device)
    step = max(1, round(block_seconds * MODEL_RATE))

    def engine() -> None:
        sep = StreamingSeparator(
            model,
            processor,
            "a chirp",
            sample_rate=MODEL_RATE,
            channels=CHANNELS,
            chunk_seconds=CHUNK_SECONDS,
            overlap_seconds=OVERLAP_SECONDS,
            worker=PassThroughWorker(),
        )
        frames = sum(b.frames for i in range(0, len(audio), step) for b in sep.push(audio[i : i + step]))
        frames += sum(b.frames for b in sep.finish())
        assert frames == len(audio), (frames, len(audio))

    walls: dict[str, list[float]] = {"transport": [], "echo": [], "engine": []}
    # started together, so that their start-ups overlap
    stand_in = ServerProcess(stand_in=True, threads=threads, device=device, inline=inline).start()
    echo = ServerProcess(echo=True, inline=inline).start()
    with stand_in as port, echo as echo_port:
        clients = {
            "transport": Client(f"127.0.0.1:{port}", block_seconds=block_seconds),
            "echo": Client(f"127.0.0.1:{echo_port}", block_seconds=block_seconds),
        }
        runs = {
            **{name: (lambda c=c: _separate(c, audio)) for name, c in clients.items()},
            "engine": engine,
        }
        try:
            for run in runs.values():  # warm-up: connections, first-call costs
                with torch_threads(threads):
                    run()
            for _ in range(repeats):
                for name, run in runs.items():
                    with torch_threads(threads):
                        start = time.perf_counter()
                        run()
                        walls[name].append(time.perf_counter() - start)
        finally:
            for c in clients.values():
                c.close()
    med = {name: statistics.median(w) for name, w in walls.items()}
    return {
        "transport_realtime_factor": seconds / med["transport"],
        "transport_echo_realtime_factor": seconds / med["echo"],
        "engine_realtime_factor": seconds / med["engine"],
        "transport_audio_seconds": seconds,
        "transport_block_seconds": block_seconds,
        "transport_server_threads": threads,
        "transport_megabytes_per_second": audio.nbytes * 3 / med["transport"] / 1e6,  # audio in, two stems out
    }


def _separate(client: Any, audio: Any) -> None:
    stems = client.separate(audio, MODEL_RATE, "a chirp")
    if stems.target.shape != audio.shape:
        raise RuntimeError(f"transport returned stems of shape {stems.target.shape} for audio {audio.shape}")
