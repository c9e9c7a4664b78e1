"""The stream defaults: one owner for the settings a stream may leave unset.

The streaming engine, the server (its `--chunk-seconds`, `--overlap-seconds`, `--steps` and batch flags, and
what GetInfo reports), the command line, the OSC bridge and the benchmarks all read `STREAM_DEFAULTS`; none
repeats a number. Torch-free, so the thin client can import it.

Why these values (see `samaudio.streaming` for the window trade-offs): 10 s windows overlapping by 2 s give the
DiT seconds of context, a 2 s cross-fade that hides seams, and first stems within about 10 s of live input, at
1.25x the compute of no overlap. 16 midpoint steps are the official solver (`SAMAudio.separate`'s default).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamDefaults:
    """Settings of a stream and of the device batching, where the caller gives none."""

    chunk_seconds: float = 10.0  # window length
    overlap_seconds: float = 2.0  # overlap of neighbouring windows (the cross-fade)
    seed: int = 0  # seed of the starting noise and the watermark message
    solver_steps: int = 16  # midpoint steps from noise to stems: the official ODE, step 1/16
    # starting noises per window, one kept by a ranker: K costs about K times the ODE (issue 16's bench), so 1
    candidates: int = 1
    # Windows one stream hands to its worker at once (`StreamingSeparator(max_batch=...)`): bounds the stream's
    # buffers and how far it runs ahead of its output.
    windows_per_stream_call: int = 4
    # Windows the server's device thread runs in one model call, across streams (`BatchingWorker(max_batch=...)`):
    # bounds device memory per call.
    windows_per_device_batch: int = 4


STREAM_DEFAULTS = StreamDefaults()

# The port `samaudio-server` listens on and clients dial when a target names only a host.
DEFAULT_PORT = 50051
