"""A benchmark server in a child process, as deployed: the client and the server do not share an interpreter.

    python -m bench.serve [--stand-in | --echo] [--threads N] [--device cpu]

prints one JSON line `{"port": N}` once it serves on 127.0.0.1, and stops when its stdin closes. The model is
the demo-tiny preset with random weights, built with the same seed as `common.build_demo_model`, so the
server's model equals the bench process's own copy weight for weight. `--stand-in` replaces the model step
with the pass-through; `--echo` serves a bare `Separate` that sends every audio message back as both stems
(no engine at all): the ceiling the gRPC layer alone puts on transport.

`ServerProcess` starts one and gives its port: `with ServerProcess(stand_in=True) as port: ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator
from samaudio.defaults import STREAM_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 300.0


class EchoServicer:
    """`Separate` reduced to the wire: accepted, then each audio message back as target and residual, then a summary."""

    def Separate(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        from samaudio.v1 import separation_pb2 as pb

        started, frames, channels = time.monotonic(), 0, 1
        for request in requests:
            if request.WhichOneof("streaming_request") == "config":
                channels = max(1, request.config.channel_count)
                yield pb.SeparateResponse(accepted=pb.SeparationAccepted(effective_config=request.config))
                continue
            data = request.audio_content
            n = len(data) // (4 * channels)  # float32 frames
            yield pb.SeparateResponse(
                stem_block=pb.StemBlock(start_frame=frames, frame_count=n, target_audio=data, residual_audio=data)
            )
            frames += n
        yield pb.SeparateResponse(
            summary=pb.SeparationSummary(
                frames_in=frames, frames_out=frames, elapsed_seconds=time.monotonic() - started
            )
        )


def _serve_echo() -> Any:
    import grpc

    from samaudio.v1 import separation_pb2_grpc as pb_grpc

    servicer = type("Echo", (EchoServicer, pb_grpc.SeparationServiceServicer), {})()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    pb_grpc.add_SeparationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _serve(stand_in: bool, echo: bool, device: str) -> tuple[int, Callable[[], None]]:
    """Start serving in this process: (port, stop)."""
    if echo:
        server, port = _serve_echo()
        return port, lambda: server.stop(0)
    from bench.common import LoopbackServer, build_demo_model, passthrough_stems

    model, processor = build_demo_model(device)
    loopback = LoopbackServer(
        model, processor, chunk_seconds=STREAM_DEFAULTS.chunk_seconds, overlap_seconds=STREAM_DEFAULTS.overlap_seconds, run_batch=passthrough_stems if stand_in else None
    )
    port = loopback.__enter__()
    return port, lambda: loopback.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a benchmark server on 127.0.0.1 (a bench child process)")
    parser.add_argument("--stand-in", action="store_true", help="pass-through instead of the model step")
    parser.add_argument("--echo", action="store_true", help="a bare echo of the audio, no engine")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads and not args.echo:
        import torch

        torch.set_num_threads(args.threads)
    port, stop = _serve(args.stand_in, args.echo, args.device)
    print(json.dumps({"port": port}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        stop()


class ServerProcess:
    """`python -m bench.serve` in a child process: `start()` launches it, `port()` waits until it serves.

    As a context manager it does both on entry (giving the port) and stops the child on exit. Starting
    several before waiting on any lets their start-ups (imports, model building) overlap. `inline=True` serves
    the same from this process instead, sparing a child's start-up (seconds of imports) where timings do not
    matter: the benchmark tests.
    """

    def __init__(
        self,
        *,
        stand_in: bool = False,
        echo: bool = False,
        threads: int | None = None,
        device: str = "cpu",
        inline: bool = False,
    ):
        self.stand_in, self.echo, self.device, self.inline = stand_in, echo, device, inline
        self._inline_stop: Any = None
        self.cmd = [sys.executable, "-m", "bench.serve", "--device", device]
        if stand_in:
            self.cmd.append("--stand-in")
        if echo:
            self.cmd.append("--echo")
        if threads:
            self.cmd += ["--threads", str(threads)]
        self.proc: subprocess.Popen | None = None
        self._port: int | None = None

    def start(self) -> "ServerProcess":
        if self.inline:
            self._port, self._inline_stop = _serve(self.stand_in, self.echo, self.device)
            return self
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return self

    def port(self) -> int:
        if self._port is None:
            assert self.proc is not None, "start() first"
            line = self.proc.stdout.readline()  # blocks until the child serves (or dies)
            if not line:
                code = self.proc.wait(timeout=START_TIMEOUT_SECONDS)
                raise RuntimeError(f"benchmark server {' '.join(self.cmd)} exited with {code} before serving")
            self._port = int(json.loads(line)["port"])
        return self._port

    def stop(self) -> None:
        if self._inline_stop is not None:
            self._inline_stop()
            self._inline_stop = None
        if self.proc is None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> int:
        if self.proc is None and self._port is None:
            self.start()
        try:
            return self.port()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
