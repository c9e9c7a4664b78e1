"""Helpers for the server tests: start a server on loopback, speak the protocol, run the library for reference,
stand in for the model (`EchoWorker`) and wait for a condition another process reports (`wait_until`).

Import what you need from here in a test module (`from server_fixtures import ...`); the session fixture
`golden_server` serves the golden model (from tests/conftest.py) with short windows.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import grpc
import numpy as np
import pytest

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc

# Short windows keep the tests fast; 1 s chunks with 0.4 s overlap still give several windows per stream.
CHUNK_SECONDS = 1.0
OVERLAP_SECONDS = 0.4
SOLVER_STEPS = 2  # fewer model evaluations than the default 16; the default is exercised once on purpose
MAX_BATCH = 2


def make_audio(seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """(frames, channels) float32: a chirp plus noise at an awkward length, different per seed."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * sample_rate))
    t = np.arange(frames, dtype=np.float64)[:, None] / sample_rate  # (frames, 1)
    tone = 0.3 * np.sin(2 * np.pi * (220 + 60 * seed) * t * (1 + 0.2 * t)) * np.linspace(1, 0.5, channels)
    return (tone + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def config(
    sample_rate: int = 48000,
    channels: int = 1,
    sample_format: int = pb.SAMPLE_FORMAT_FLOAT32_LE,
    description: str = "a chirp",
    anchors: Sequence[tuple[int, float, float]] = (),
    **fields: Any,
) -> pb.SeparationConfig:
    fields.setdefault("chunk_seconds", CHUNK_SECONDS)
    fields.setdefault("overlap_seconds", OVERLAP_SECONDS)
    fields.setdefault("solver_steps", SOLVER_STEPS)
    return pb.SeparationConfig(
        description=description,
        anchors=[pb.Anchor(sign=s, start_seconds=a, end_seconds=b) for s, a, b in anchors],
        sample_rate_hertz=sample_rate,
        channel_count=channels,
        sample_format=sample_format,
        **{k: v for k, v in fields.items() if v is not None},
    )


def to_bytes(audio: np.ndarray, sample_format: int) -> bytes:
    if sample_format == pb.SAMPLE_FORMAT_INT16_LE:
        return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    return audio.astype("<f4").tobytes()


def from_bytes(data: bytes, sample_format: int, channels: int) -> np.ndarray:
    if sample_format == pb.SAMPLE_FORMAT_INT16_LE:
        return np.frombuffer(data, "<i2").reshape(-1, channels).astype(np.float32) / 32768
    return np.frombuffer(data, "<f4").reshape(-1, channels)


def pieces(audio: np.ndarray, piece_frames: int) -> list[np.ndarray]:
    """The client's sends: consecutive (n, channels) pieces, the last one short."""
    return [audio[i : i + piece_frames] for i in range(0, len(audio), piece_frames)]


def requests(cfg: pb.SeparationConfig, sends: Iterable[np.ndarray]) -> Iterator[pb.SeparateRequest]:
    yield pb.SeparateRequest(config=cfg)
    for piece in sends:
        yield pb.SeparateRequest(audio_content=to_bytes(piece, cfg.sample_format))


@dataclass
class Result:
    """Everything one stream answered, stem blocks joined."""

    accepted: pb.SeparationAccepted
    target: np.ndarray  # (frames, channels) float32
    residual: np.ndarray  # (frames, channels) float32
    target_bytes: bytes
    residual_bytes: bytes
    blocks: list[pb.StemBlock] = field(default_factory=list)
    progress: list[pb.SeparationProgress] = field(default_factory=list)
    summary: pb.SeparationSummary | None = None


def collect(responses: Iterable[pb.SeparateResponse], cfg: pb.SeparationConfig) -> Result:
    accepted, blocks, progress, summary = None, [], [], None
    for response in responses:
        kind = response.WhichOneof("streaming_response")
        assert summary is None, f"{kind} after the summary"
        if kind == "accepted":
            assert accepted is None and not blocks, "accepted must come first, once"
            accepted = response.accepted
        elif kind == "stem_block":
            blocks.append(response.stem_block)
        elif kind == "progress":
            progress.append(response.progress)
        else:
            summary = response.summary
    assert accepted is not None and summary is not None
    target_bytes = b"".join(b.target_audio for b in blocks)
    residual_bytes = b"".join(b.residual_audio for b in blocks)
    ch = cfg.channel_count
    return Result(
        accepted,
        from_bytes(target_bytes, cfg.sample_format, ch),
        from_bytes(residual_bytes, cfg.sample_format, ch),
        target_bytes,
        residual_bytes,
        blocks,
        progress,
        summary,
    )


def separate(
    stub: pb_grpc.SeparationServiceStub, cfg: pb.SeparationConfig, sends: Iterable[np.ndarray], **kw
) -> Result:
    return collect(stub.Separate(requests(cfg, sends), **kw), cfg)


def reference(model, processor, cfg: pb.SeparationConfig, sends: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The library's streaming engine in this process, fed the same pieces: (target, residual) float32."""
    from samaudio.streaming import StreamingSeparator

    steps = cfg.solver_steps if cfg.HasField("solver_steps") else None
    sep = StreamingSeparator(
        model,
        processor,
        cfg.description,
        [({1: "+", 2: "-"}[a.sign], a.start_seconds, a.end_seconds) for a in cfg.anchors],
        sample_rate=cfg.sample_rate_hertz,
        channels=cfg.channel_count,
        chunk_seconds=cfg.chunk_seconds,
        overlap_seconds=cfg.overlap_seconds,
        seed=cfg.seed,
        ode_opt=None if steps in (None, 16) else {"method": "midpoint", "options": {"step_size": 1.0 / steps}},
        max_batch=MAX_BATCH,
        candidates=cfg.candidates if cfg.HasField("candidates") else 1,
        predict_spans=cfg.predict_spans,
        span_gate=cfg.span_gate if cfg.HasField("span_gate") else None,
        **({"span_threshold": cfg.span_threshold} if cfg.HasField("span_threshold") else {}),
    )
    blocks = [b for piece in sends for b in sep.push(piece)] + sep.finish()
    reference.last = sep  # the engine, for its counters
    return (
        np.concatenate([b.target for b in blocks]).astype(np.float32),
        np.concatenate([b.residual for b in blocks]).astype(np.float32),
    )


def stream(
    model, processor, audio: np.ndarray, sample_rate: int, *, push: int | None = None, description: str = "a chirp",
    steps: int = 2, **kw: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The library's streaming engine on `audio` (frames, channels) with the short test windows, pushed in pieces of
    `push` frames (None: all at once); `kw` goes to `StreamingSeparator` (`worker`, `residual`, ...).
    Returns (target, residual)."""
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model, processor, description, sample_rate=sample_rate, channels=audio.shape[1], chunk_seconds=CHUNK_SECONDS,
        overlap_seconds=OVERLAP_SECONDS, ode_opt={"method": "midpoint", "options": {"step_size": 1.0 / steps}}, **kw,
    )
    blocks = [b for p in pieces(audio, push or len(audio)) for b in sep.push(p)] + sep.finish()
    return np.concatenate([b.target for b in blocks]), np.concatenate([b.residual for b in blocks])


class EchoWorker:
    """Stand-in for the model (a `WindowWorker`): the target is the window's own input, the residual silence.
    Records every call, so tests see the jobs the engine built."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []  # one list of WindowJob per submit

    @property
    def jobs(self) -> list[Any]:
        return [job for call in self.calls for job in call]

    def submit(self, jobs):
        import concurrent.futures

        import torch

        from samaudio.streaming import WindowStems

        self.calls.append(list(jobs))
        future = concurrent.futures.Future()
        future.set_result([WindowStems(job.audio.clone(), torch.zeros_like(job.audio)) for job in jobs])
        return future


def wait_until(condition, seconds: float = 120, interval: float = 0.02) -> bool:
    """Poll `condition()` until it is true or `seconds` pass; its last answer. For conditions only another process
    knows (a replica's counters, a file a child writes), where there is no event to wait on."""
    deadline = time.monotonic() + seconds
    while not (done := condition()) and time.monotonic() < deadline:
        time.sleep(interval)
    return bool(done)


class Feeder:
    """A request iterator the test drives: put() requests, close() half-closes."""

    _END = object()

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    def put(self, request: pb.SeparateRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[pb.SeparateRequest]:
        while (item := self._queue.get()) is not self._END:
            yield item


def status_of(call_fn) -> tuple[grpc.StatusCode, str]:
    """Run `call_fn` expecting an RpcError; return its code and details."""
    with pytest.raises(grpc.RpcError) as info:
        call_fn()
    return info.value.code(), info.value.details()


def stream_defaults(**fields: Any):
    """The tests' server defaults: short windows, MAX_BATCH windows per stream call and per device batch."""
    from samaudio.defaults import StreamDefaults

    fields.setdefault("chunk_seconds", CHUNK_SECONDS)
    fields.setdefault("overlap_seconds", OVERLAP_SECONDS)
    fields.setdefault("windows_per_stream_call", MAX_BATCH)
    fields.setdefault("windows_per_device_batch", MAX_BATCH)
    return StreamDefaults(**fields)


def start_server(model, processor, **kwargs: Any):
    """A started server on 127.0.0.1:0 -> (server, port). Stop it with server.stop(0)."""
    from samaudio_server.server import create_server
    kwargs.setdefault("defaults", stream_defaults())
    server, port = create_server("127.0.0.1:0", model=model, processor=processor, model_name="golden", **kwargs)
    server.start()
    return server, port


STARTUP_SECONDS = 300  # loading torch and the model on a busy CI machine


def server_command() -> list[str]:
    """The installed `samaudio-server` script beside this python, else the module."""
    script = shutil.which("samaudio-server", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "samaudio_server.main"]


@contextmanager
def server_process(*args: str) -> Iterator[tuple[subprocess.Popen, int, list[str]]]:
    """A `samaudio-server --port 0 ARGS...` process -> (process, port, its stderr lines so far); killed after."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SAMAUDIO_TOKEN", None)
    command = [*server_command(), "--port", "0", *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    port = None
    try:
        while port is None:
            line = lines.get(timeout=STARTUP_SECONDS)
            assert line is not None, "samaudio-server exited before listening:\n" + "".join(log)
            if match := re.search(r"listening on [\d.]+:(\d+)", line):
                port = int(match.group(1))
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


@pytest.fixture(scope="session")
def golden_server(golden_model, golden_processor):
    """(server, port): the golden model served on loopback, no token, no TLS, default limits."""
    server, port = start_server(golden_model, golden_processor)
    yield server, port
    server.stop(0)


@pytest.fixture(scope="session")
def channel(golden_server):
    _, port = golden_server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel) -> pb_grpc.SeparationServiceStub:
    return pb_grpc.SeparationServiceStub(channel)
