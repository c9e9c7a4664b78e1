"""`samaudio osc`: trigger separations from any DAW or controller that speaks OSC (issue #10).

OSC carries short UDP messages, not audio, so the bridge is a thin trigger: a request names a file (and
optionally a region and span prompts), the bridge runs it through the same `Client` as `samaudio separate`
and writes the same `<name>.target.<ext>` / `<name>.residual.<ext>` files, and it answers with progress and
the stems' paths. The address space (every reply goes to the `--reply` address and carries the request id):

    in   /samaudio/separate  request_id:s path:s description:s [start_s:f duration_s:f] [spans:s]
    in   /samaudio/cancel    request_id:s
    out  /samaudio/accepted  request_id:s                       checked and queued
    out  /samaudio/progress  request_id:s fraction:f            increasing, in (0, 1]
    out  /samaudio/done      request_id:s target_path:s... residual_path:s    absolute paths
    out  /samaudio/error     request_id:s message:s             "" as the id when the message's own is unusable
    out  /samaudio/cancelled request_id:s

Several sounds from one stream: separate them in the description with semicolons (`"vocals; drums; bass"`);
done then carries one target path per sound, in that order, named after it (`take.vocals.wav`), then the
residual's (the mix minus the targets). An accepted request ends with exactly one of done, error or cancelled; a request refused before it is
accepted gets one error and nothing else. Spans are one string, `"+1.2:3.4,-5:6"`, on the file's timeline
as with `samaudio separate --span`; numbers may be sent as OSC ints or floats. A cancel stops the request
at its next message from the server and deletes its partial files; one that comes after the stems are
written changes nothing (the request ends with done).

OSC has no authentication: whoever can send to the listening port can have the bridge read any file it can
read and write stems beside it. The bridge therefore listens on loopback unless told otherwise, and warns
when told otherwise.

    bridge = OscBridge(Client("gpu-box:50051"), reply=("127.0.0.1", 9001), listen=("127.0.0.1", 0))
    host, port = bridge.start()
    ...
    bridge.stop()
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from samaudio_client.client import Client, SeparationOptions
from samaudio_client.errors import ClientError
from samaudio_client.files import FORMATS, Region, StemWriter, output_subtype, stem_paths
from samaudio_client.options import (
    add_connection,
    add_quality_settings,
    add_stream_settings,
    positive,
    stream_settings,
)
from samaudio_client.spans import Span, parse_span, to_region

__all__ = [
    "OscBridge",
    "MessageError",
    "SeparateRequest",
    "parse_separate",
    "parse_spans",
    "parse_address",
    "request_id_of",
    "is_loopback",
    "add_parser",
    "main",
    "run_bridge",
]

log = logging.getLogger(__name__)

PREFIX = "/samaudio/"
SEPARATE, CANCEL = "/samaudio/separate", "/samaudio/cancel"
ACCEPTED, PROGRESS, DONE, ERROR, CANCELLED = (
    "/samaudio/accepted", "/samaudio/progress", "/samaudio/done", "/samaudio/error", "/samaudio/cancelled",
)
SEPARATE_FORM = "/samaudio/separate request_id:s path:s description:s [start_s:f duration_s:f] [spans:s]"
CANCEL_FORM = "/samaudio/cancel request_id:s"
DEFAULT_LISTEN = ("127.0.0.1", 9000)


class MessageError(ClientError, ValueError):
    """An OSC message the bridge cannot act on; it is answered with `/samaudio/error <request_id> <message>`."""

    def __init__(self, request_id: str, message: str) -> None:
        self.request_id = request_id  # "" when the message carries no usable id
        super().__init__(message)


class _Cancelled(Exception):
    """Raised from the client's callbacks to stop a cancelled request (the client then cancels its call)."""


# --------------------------------------------------------------------------------------------------------------
# Messages in


@dataclass(frozen=True)
class SeparateRequest:
    """A checked `/samaudio/separate`: what `Client.separate_file` and `StemWriter` need."""

    request_id: str
    region: Region
    description: str | list[str]  # several when the message separated them with ";"
    spans: list[Span]  # on the file's timeline, as Client.separate_file takes them
    start: float | None  # seconds, as sent
    duration: float | None
    paths: tuple[Path, ...]  # target(s), residual


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # OSC T/F arrive as bools


def _string(args: Sequence[Any], i: int, name: str, request_id: str) -> str:
    value = args[i]
    if not isinstance(value, str):
        raise MessageError(request_id, f"{name} must be a string, got {_kind(value)}; expected {SEPARATE_FORM}")
    return value


def _seconds(value: Any, name: str, request_id: str) -> float:
    if not _is_number(value):
        raise MessageError(
            request_id, f"{name} must be a number of seconds, got {_kind(value)}; expected {SEPARATE_FORM}"
        )
    if not math.isfinite(value):
        raise MessageError(request_id, f"{name} {value} is not a finite number of seconds")
    return float(value)


def request_id_of(args: Sequence[Any], form: str) -> str:
    """The first argument if it is a usable request id, else a `MessageError` answered with id ""."""
    if not args:
        raise MessageError("", f"no arguments: expected {form}")
    if not isinstance(args[0], str) or not args[0]:
        raise MessageError("", f"request_id must be a non-empty string, got {_kind(args[0])}; expected {form}")
    return args[0]


def parse_spans(text: str) -> list[Span]:
    """`"+1.2:3.4,-5:6"` -> the two spans; `""` -> none. A bad piece raises `SpanError` naming the form."""
    return [parse_span(piece) for piece in text.split(",") if piece.strip()]


def parse_separate(args: Sequence[Any], out_dir: Path | None = None, fmt: str = "wav") -> SeparateRequest:
    """Check the arguments of `/samaudio/separate`, the file, the region and the spans, before any work."""
    rid = request_id_of(args, SEPARATE_FORM)
    if len(args) < 3:
        raise MessageError(rid, f"{len(args)} argument(s), expected at least 3: {SEPARATE_FORM}")
    path = Path(_string(args, 1, "path", rid)).expanduser()
    description = _string(args, 2, "description", rid)
    extra = list(args[3:])  # by count: [spans] | start_s duration_s | start_s duration_s spans
    if len(extra) > 3:
        raise MessageError(rid, f"{len(args)} arguments, at most 6: {SEPARATE_FORM}")
    if len(extra) == 1 and _is_number(extra[0]):
        raise MessageError(rid, f"start_s {extra[0]} comes without duration_s: send both, or neither")
    start = duration = None
    if len(extra) >= 2:
        start = _seconds(extra[0], "start_s", rid)
        duration = _seconds(extra[1], "duration_s", rid)
        extra = extra[2:]
    spans_text = extra[0] if extra else ""
    if not isinstance(spans_text, str):
        raise MessageError(
            rid, f"spans must be a string like \"+1.2:3.4,-5:6\", got {_kind(spans_text)}; expected {SEPARATE_FORM}"
        )
    sounds = [d.strip() for d in description.split(";")] if ";" in description else [description]
    if len(sounds) > 1:
        if not all(sounds):
            raise MessageError(rid, 'an empty sound among several: describe each, e.g. "vocals; drums"')
        if spans_text.strip():
            raise MessageError(rid, "spans mark one sound: send them with one description, not several")
    try:
        spans = parse_spans(spans_text)
        if not description.strip() and not any(s.sign == "+" for s in spans):
            raise MessageError(rid, 'say what to separate: a description ("snare drum") or at least one + span')
        region = Region.of(path, start, duration)
        to_region(spans, region.start_seconds, region.seconds)  # the check only: the client moves them itself
    except MessageError:
        raise
    except ClientError as err:  # SpanError, AudioFileError: their messages name the numbers and the fix
        raise MessageError(rid, str(err)) from None
    paths = stem_paths(path, out_dir, fmt, sounds)
    return SeparateRequest(rid, region, sounds if len(sounds) > 1 else description, spans, start, duration, paths)


# --------------------------------------------------------------------------------------------------------------
# The bridge


@dataclass
class _Job:
    request: SeparateRequest
    cancel: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled


class _Dispatcher(Dispatcher):
    """python-osc drops a packet it cannot parse without a word; this one tells the bridge first."""

    def __init__(self, on_unreadable: Callable[[tuple[str, int], Exception], None]) -> None:
        super().__init__(strict_timing=False)  # a bundle's future time tag must not stall the listening thread
        self._on_unreadable = on_unreadable

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        try:
            osc_packet.OscPacket(data)
        except osc_packet.ParseError as err:
            self._on_unreadable(client_address, err)
            return []
        return super().call_handlers_for_packet(data, client_address)


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the bridge to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class OscBridge:
    """Listens for OSC requests, runs each through `client` in a worker thread, replies to `reply`.

    Up to `max_requests` separations run at once; more are accepted and wait their turn. `options` go to
    every separation (chunk_seconds, solver_steps, ...); stems are written to `out_dir` (default: beside
    each input) as `fmt`. A progress reply is sent each time the fraction done has grown by `progress_step`.
    """

    def __init__(
        self,
        client: Client,
        reply: tuple[str, int],
        listen: tuple[str, int] = DEFAULT_LISTEN,
        *,
        out_dir: str | Path | None = None,
        fmt: str = "wav",
        options: SeparationOptions | None = None,
        max_requests: int = 4,
        progress_step: float = 0.01,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if max_requests < 1:
            raise ValueError(f"max_requests={max_requests} must be >= 1")
        self.client = client
        self.reply = reply
        self.listen = listen
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.fmt = fmt
        self.options: SeparationOptions = dict(options or {})  # type: ignore[assignment]
        self.max_requests = max_requests
        self.progress_step = progress_step
        self._jobs: dict[str, _Job] = {}  # request id -> job, from accepted to its last reply
        self._lock = threading.Lock()
        self._server: BlockingOSCUDPServer | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._sender: SimpleUDPClient | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """The address the bridge listens on (the real port when started on port 0)."""
        if self._server is None:
            raise RuntimeError("the bridge is not started: call start() first")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Bind, start serving in a background thread, and return the address listened on."""
        if self._server is not None:
            raise RuntimeError("the bridge is already started")
        host, port = self.listen
        if not is_loopback(host):
            log.warning(
                "listening on %s, not loopback: OSC has no authentication, so anyone who can reach port %d can "
                "make this bridge read files and write stems", host, port,
            )
        dispatcher = _Dispatcher(self._on_unreadable)
        dispatcher.map(SEPARATE, self._on_separate, needs_reply_address=True)
        dispatcher.map(CANCEL, self._on_cancel, needs_reply_address=True)
        dispatcher.set_default_handler(self._on_unknown, needs_reply_address=True)
        self._sender = SimpleUDPClient(*self.reply)
        self._pool = ThreadPoolExecutor(self.max_requests, thread_name_prefix="samaudio-osc")
        self._server = BlockingOSCUDPServer((host, port), dispatcher)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="samaudio-osc-listen", daemon=True
        )  # polls for shutdown every 0.1 s: stop() returns promptly
        self._thread.start()
        log.info("OSC bridge listening on %s:%d, replying to %s:%d", *self.address, *self.reply)
        return self.address

    def stop(self) -> None:
        """Stop listening, cancel the requests in flight (each gets its reply) and wait for them to end."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None and self._pool is not None
        self._thread.join()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._pool.shutdown(wait=True)
        self._server = self._thread = self._pool = None

    def __enter__(self) -> OscBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ messages in (the listening thread)

    def _on_separate(self, sender: tuple[str, int], address: str, *args: Any) -> None:
        try:
            request = parse_separate(args, self.out_dir, self.fmt)
            job = _Job(request)
            with self._lock:
                self._claim(job)
        except MessageError as err:
            self._refuse(sender, address, err)
            return
        log.info("%s from %s:%d: %s %r", request.request_id, *sender[:2], request.region.path, request.description)
        self._send(ACCEPTED, request.request_id)  # before the worker can send anything for it
        assert self._pool is not None
        self._pool.submit(self._run, job)

    def _claim(self, job: _Job) -> None:
        """Register `job` as in flight; refuse a reused id or stems another request is writing."""
        rid = job.request.request_id
        if rid in self._jobs:
            raise MessageError(rid, f"request {rid!r} is already in flight: use a new request_id per request")
        for other in self._jobs.values():
            if set(other.request.paths) & set(job.request.paths):
                raise MessageError(
                    rid, f"request {other.request.request_id!r} is writing {job.request.paths[0]} already: wait for "
                    "its reply, or separate into another --out-dir",
                )
        self._jobs[rid] = job

    def _on_cancel(self, sender: tuple[str, int], address: str, *args: Any) -> None:
        try:
            rid = request_id_of(args, CANCEL_FORM)
            if len(args) > 1:
                raise MessageError(rid, f"{len(args)} arguments, expected 1: {CANCEL_FORM}")
            with self._lock:
                job = self._jobs.get(rid)
            if job is None:
                raise MessageError(rid, f"no request {rid!r} in flight to cancel (it has ended, or was never accepted)")
        except MessageError as err:
            self._refuse(sender, address, err)
            return
        log.info("%s: cancel from %s:%d", rid, *sender[:2])
        job.cancel.set()

    def _on_unknown(self, sender: tuple[str, int], address: str, *args: Any) -> None:
        if not address.startswith(PREFIX):  # another application's traffic (a control surface's feedback, say)
            log.debug("ignoring %s from %s:%d", address, *sender[:2])
            return
        self._refuse(sender, address, MessageError("", f"unknown address {address}: expected {SEPARATE} or {CANCEL}"))

    def _on_unreadable(self, sender: tuple[str, int], err: Exception) -> None:
        log.warning("unreadable OSC packet from %s:%d: %s", *sender[:2], err)
        self._send(ERROR, "", f"unreadable OSC packet ({err}): expected {SEPARATE_FORM}")

    def _refuse(self, sender: tuple[str, int], address: str, err: MessageError) -> None:
        log.warning("%s from %s:%d refused: %s", address, *sender[:2], err)
        self._send(ERROR, err.request_id, f"{address}: {err}")

    # ------------------------------------------------------------------ replies and work (worker threads)

    def _send(self, address: str, *args: Any) -> None:
        assert self._sender is not None
        try:
            self._sender.send_message(address, list(args))
        except OSError as err:  # nobody listening, network down: the work goes on, the reply is lost
            log.warning("could not send %s to %s:%d: %s", address, *self.reply, err)

    def _run(self, job: _Job) -> None:
        rid = job.request.request_id
        try:
            reply = self._separate(job)
        except _Cancelled:
            log.info("%s: cancelled", rid)
            reply = (CANCELLED, rid)
        except (ClientError, OSError) as err:  # CallError with its code, unreadable input, unwritable output
            log.warning("%s failed: %s", rid, err)
            reply = (ERROR, rid, str(err))
        except Exception as err:  # a bug of ours: the request fails, the bridge keeps serving
            log.exception("%s failed", rid)
            reply = (ERROR, rid, f"internal error of the OSC bridge ({type(err).__name__}: {err})")
        with self._lock:
            del self._jobs[rid]  # free the id before the last reply, so a sender may reuse it at once
        self._send(*reply)

    def _separate(self, job: _Job) -> tuple[str, ...]:
        job.check()  # cancelled while it waited for a worker
        r = job.request
        total = r.region.frames
        sent = 0.0

        def show(fraction: float) -> None:
            nonlocal sent
            job.check()
            fraction = min(1.0, fraction)
            if fraction > sent and (fraction - sent >= self.progress_step or fraction == 1.0):
                sent = fraction
                self._send(PROGRESS, r.request_id, fraction)

        def on_progress(frames_done: int, frames_known: int) -> None:
            show(frames_done / total)

        def on_step(done: int, planned: int) -> None:  # model work, which moves inside a window
            show(min(done / planned, 0.999))  # 1.0 is for the last stems written

        def on_block(block: Any) -> None:
            job.check()
            writer.write(block.start, *(block.targets or (block.target,)), block.residual)

        writer = StemWriter(
            r.paths, r.region.sample_rate, r.region.channels, self.fmt, output_subtype(self.fmt, r.region.subtype)
        )
        try:
            self.client.separate_file(
                r.region.path, r.description, r.spans, start=r.start, duration=r.duration,
                on_progress=on_progress, on_step=on_step, on_block=on_block, **self.options,
            )
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return (DONE, r.request_id, *(str(p.resolve()) for p in r.paths))


# --------------------------------------------------------------------------------------------------------------
# Command line: `samaudio osc`


def parse_address(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9000"` or `"[::1]:9000"` -> (host, port); a `ValueError` naming the form otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9000)")
    return host, int(port)


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `samaudio osc` on the CLI's subparsers (same connection and separation options as `separate`)."""
    p = subparsers.add_parser(
        "osc", help="separate on request from a DAW or controller that speaks OSC",
        description="Listen for OSC messages (UDP) and separate the files they name through the server, writing "
        "<name>.target.<ext> and <name>.residual.<ext> (several sounds, separated by ';' in the description: "
        "<name>.<sound>.<ext> each). Address space: " + SEPARATE_FORM + "; " + CANCEL_FORM
        + "; replies /samaudio/accepted, /samaudio/progress, /samaudio/done, /samaudio/error, /samaudio/cancelled "
        "to --reply. OSC has no authentication: keep --listen on loopback unless the network is yours.",
    )
    p.add_argument(
        "--listen", type=_address, default=DEFAULT_LISTEN, metavar="HOST:PORT",
        help="where to receive requests (default: %s:%d, loopback only)" % DEFAULT_LISTEN,
    )
    p.add_argument("--reply", type=_address, required=True, metavar="HOST:PORT", help="where to send the replies")
    add_connection(p)
    p.add_argument("--model", default=None, metavar="NAME", help="a model the server serves (default: its default)")
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="where to write the stems (default: beside each input)")
    p.add_argument("--format", choices=sorted(FORMATS), default="wav", help="output format (default: %(default)s)")
    add_stream_settings(p)
    add_quality_settings(p)
    p.add_argument(
        "--jobs", type=positive(int), default=4, metavar="N",
        help="separations run at once; more wait their turn (default: %(default)s)",
    )
    return p


def run_bridge(bridge: OscBridge, stop: threading.Event | None = None) -> None:
    """Start `bridge`, say where it listens, serve until `stop` is set or Ctrl-C, then stop it (requests in
    flight are cancelled and answered)."""
    stop = stop or threading.Event()
    host, port = bridge.start()
    try:
        print(
            f"samaudio osc: listening on {host}:{port}, replying to {bridge.reply[0]}:{bridge.reply[1]}, "
            f"separating on {bridge.client.target}; Ctrl-C stops", file=sys.stderr,
        )
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to Ctrl-C
            pass
    except KeyboardInterrupt:
        pass
    finally:
        bridge.stop()


def main(args: argparse.Namespace) -> None:
    """`samaudio osc`: run the bridge until Ctrl-C."""
    options = stream_settings(args)
    if args.model:
        options["model"] = args.model
    with Client(args.server, token=args.token, tls=args.tls, ca_file=args.tls_ca) as client:
        bridge = OscBridge(
            client, args.reply, args.listen, out_dir=args.out_dir, fmt=args.format, options=options,
            max_requests=args.jobs,
        )
        run_bridge(bridge)
