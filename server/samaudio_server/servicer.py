"""`samaudio.v1.SeparationService`: unpack requests, drive the library's `StreamingSeparator`, pack stem blocks.

No model math here. Each stream runs in a gRPC thread: it reads the config, checks what only a server can
check (request order, formats, limits), builds a `StreamingSeparator` whose windows go to the shared device
worker, and turns bytes into (frames, channels) float32 arrays (a masked video into the library's
`VideoPrompt`) and stem blocks back into bytes. Library errors become status codes through
`errors.STATUS_CODES`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import grpc
import numpy as np

from samaudio.defaults import STREAM_DEFAULTS, StreamDefaults
from samaudio.errors import (
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    InvalidVideoError,
    SAMAudioError,
    VideoTooLargeError,
)
from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_server.errors import (
    DrainingError,
    ProtocolError,
    StreamTooLongError,
    PartUnavailableError,
    TooManyStreamsError,
    AudioTimeoutError,
    UnparseableRequestError,
    VisionUnavailableError,
    quoted,
    status_code,
)
from samaudio_server.worker import StreamWorker

logger = logging.getLogger(__name__)

SIGNS = {pb.ANCHOR_SIGN_POSITIVE: "+", pb.ANCHOR_SIGN_NEGATIVE: "-"}
SAMPLE_DTYPES = {pb.SAMPLE_FORMAT_FLOAT32_LE: np.dtype("<f4"), pb.SAMPLE_FORMAT_INT16_LE: np.dtype("<i2")}
INT16_SCALE = 32768.0


@dataclass
class StreamRecord:
    """What the one log line of a finished stream says: filled in as the stream goes."""

    rate: int = 0
    frames: int = 0  # received
    windows: int = 0
    outcome: str = "OK"


@dataclass(frozen=True)
class Limits:
    """What the server accepts (reported by GetInfo). 0 means no limit for max_streams and max_stream_seconds."""

    max_streams: int = 8
    max_stream_seconds: float = 3600.0
    min_sample_rate_hertz: int = 8000
    max_sample_rate_hertz: int = 192000
    max_channel_count: int = 16
    max_request_bytes: int = 8 * 1024 * 1024
    max_response_bytes: int = 1024 * 1024  # stem blocks are split to fit a client's default 4 MiB receive limit
    max_solver_steps: int = 128
    # A masked video, as sent and as decoded frames (N x H x W x 3), held for the whole stream: 256 MiB is about
    # 10 s of 25 fps video at 640 x 540. What is sent must also fit max_request_bytes. 0: no limit.
    max_video_bytes: int = 256 * 1024 * 1024
    # Per-request cost caps, checked on the config before any work (issue 19: a 0.1 s request with a 100 s window
    # held the device for a minute at 3 GiB). A window's memory grows with its length, attention time with its
    # square: 30 s is three default windows.
    max_chunk_seconds: float = 30.0
    # chunk - overlap: every stride starts a window, so a tiny stride multiplies the model calls per second.
    min_stride_seconds: float = 0.1
    # channels x solver steps x windows covering each frame (chunk / stride): the model work per frame of input.
    # The defaults use 2 x 16 x 1.25 = 40 for stereo; 16 channels x 16 steps or 2 channels x 128 steps still fit.
    max_frame_work: float = 512.0
    # The description is encoded once per stream and echoed in `accepted`: 4 KiB is far past T5's 512 tokens.
    max_description_bytes: int = 4096
    # Waiting for the client's next message may exceed the seconds of audio received by this much; then the
    # stream ends OUT_OF_RANGE, so an idle or trickling client cannot hold a slot (0: wait forever).
    audio_timeout_seconds: float = 30.0
    # Rates in range are accepted when gcd(rate, model rate) >= this: for rates up to 192 kHz, a divisor of at
    # least 25 Hz keeps torchaudio's resampling kernel under the library's MAX_RESAMPLE_TAPS (published in GetInfo).
    sample_rate_divisor_hertz: int = 25
    # Transport: the server pings a connection quiet for keepalive_seconds and drops it when no answer comes in
    # keepalive_timeout_seconds (a vanished client frees its stream); a connection with no call for
    # max_connection_idle_seconds is closed.
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    max_connection_idle_seconds: float = 300.0
    # Candidates per window: each costs about one more separation of every window (bench rerank), so a stream
    # asking for many holds the device K times as long.
    max_candidates: int = 8


class StreamGate:
    """Counts running streams, enforces max_streams, and refuses new streams while draining."""

    def __init__(self, max_streams: int):
        self.max_streams = max_streams
        self.active = 0
        self.draining = False
        self._cond = threading.Condition()

    def enter(self) -> None:
        with self._cond:
            if self.draining:
                raise DrainingError("the server is shutting down and takes no new streams: retry on another server")
            if self.max_streams and self.active >= self.max_streams:
                raise TooManyStreamsError(
                    f"the server already runs {self.active} of its {self.max_streams} streams: retry when one "
                    "finishes, or start the server with a larger --max-streams"
                )
            self.active += 1

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s until no stream runs. True when none is left."""
        with self._cond:
            return self._cond.wait_for(lambda: self.active == 0, timeout)

    def close(self) -> None:
        """Refuse new streams from now on (UNAVAILABLE); running ones go on."""
        with self._cond:
            self.draining = True


def decode_audio(data: bytes, fmt: int, channels: int) -> np.ndarray:
    """Interleaved little-endian bytes -> (frames, channels) float32."""
    dtype = SAMPLE_DTYPES[fmt]
    frame_bytes = dtype.itemsize * channels
    if len(data) % frame_bytes:
        raise ProtocolError(
            f"audio_content holds {len(data)} bytes, not a whole number of {frame_bytes}-byte frames "
            f"({channels} channel(s) x {dtype.itemsize} bytes): send whole interleaved frames in each message"
        )
    samples = np.frombuffer(data, dtype=dtype).reshape(-1, channels)  # (frames, channels)
    if fmt == pb.SAMPLE_FORMAT_INT16_LE:
        return samples.astype(np.float32) / np.float32(INT16_SCALE)
    return samples.astype(np.float32, copy=False)  # native float32; read-only (the engine copies what it keeps)


def unpack_masked_video(video: pb.MaskedVideo, max_bytes: int) -> Any:
    """A `MaskedVideo` message -> the library's `VideoPrompt` (raw frames or a decoded file, masks applied).

    `max_bytes` (0: no limit) bounds the bytes sent and the decoded frames. Runs on the server side (torch).
    """
    import torch

    from samaudio.streaming import VideoPrompt

    sent = len(video.rgb_frames) + len(video.encoded_file) + len(video.masks)
    if max_bytes and sent > max_bytes:
        raise VideoTooLargeError(
            f"masked_video sends {sent} bytes, more than this server's limit of {max_bytes}: send a shorter or "
            "smaller video, or an encoded file instead of raw frames"
        )
    source = video.WhichOneof("source")
    if source is None:
        raise InvalidVideoError("masked_video has neither rgb_frames nor encoded_file: set exactly one of them")
    if source == "encoded_file":
        prompt = VideoPrompt.from_file(video.encoded_file, max_bytes=max_bytes or None)
    else:
        W, H, fps = video.width_pixels, video.height_pixels, video.frames_per_second
        if W < 1 or H < 1:
            raise InvalidVideoError(
                f"masked_video has width_pixels={W}, height_pixels={H}: give the size of the raw frames, both >= 1"
            )
        if not (math.isfinite(fps) and fps > 0):
            raise InvalidVideoError(
                f"masked_video has frames_per_second={fps}: give the frame rate of the raw frames, e.g. 25"
            )
        frame_bytes = W * H * 3
        N, rest = divmod(len(video.rgb_frames), frame_bytes)
        if rest or N == 0:
            raise InvalidVideoError(
                f"masked_video.rgb_frames holds {len(video.rgb_frames)} bytes, not a whole number of {W}x{H} RGB "
                f"frames of {frame_bytes} bytes each: send frames x height x width x 3 bytes"
            )
        rgb = np.frombuffer(video.rgb_frames, np.uint8).reshape(N, H, W, 3)
        prompt = VideoPrompt.from_frames(torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy()), fps)  # (N, 3, H, W)
    if video.masks:
        N, (H, W) = prompt.frames.shape[0], prompt.size
        if len(video.masks) != N * H * W:
            raise InvalidVideoError(
                f"masked_video.masks holds {len(video.masks)} bytes but the {N} frames of {W}x{H} need {N * H * W} "
                "(one byte per pixel of every frame, non-zero on the object); send none when the frames are masked"
            )
        prompt = prompt.with_masks(torch.from_numpy(np.frombuffer(video.masks, np.uint8).reshape(N, H, W).copy()))
    return prompt


def span_threshold() -> float:
    """The span predictor's default threshold (owned by the library)."""
    from samaudio.model.span_predictor import DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD


def ranker_kind(ranker: Any) -> str:
    """A loaded ranker's kind as its config names it ("judge", "clap", "ensemble", "imagebind"); "" for None."""
    if ranker is None:
        return ""
    from samaudio.ranking.config import KINDS

    for kind, config_class in KINDS.items():
        if isinstance(getattr(ranker, "config", None), config_class):
            return kind
    name = type(ranker).__name__
    return name[: -len("Ranker")].lower() if name.endswith("Ranker") else name


def null_sum_int16(mix: np.ndarray, targets: list[np.ndarray]) -> tuple[list[bytes], bytes, int]:
    """Null-sum stems in SAMPLE_FORMAT_INT16_LE: targets rounded to int16, the residual the mix minus them on the
    integers (clipped to int16 where it must be). -> (target bytes, residual bytes, clipped samples).

    `mix` is what the client sent (x / 32768, so x * 32768 gives its integers back exactly)."""
    x = np.rint(mix.astype(np.float64) * INT16_SCALE).astype(np.int64)
    ints = [np.clip(np.rint(t.astype(np.float64) * INT16_SCALE), -32768, 32767).astype(np.int64) for t in targets]
    residual = x - np.sum(ints, axis=0)
    clipped = int(np.count_nonzero((residual < -32768) | (residual > 32767)))
    residual = np.clip(residual, -32768, 32767)
    return [t.astype("<i2").tobytes() for t in ints], residual.astype("<i2").tobytes(), clipped


def encode_audio(frames: np.ndarray, fmt: int) -> bytes:
    """(frames, channels) float -> interleaved little-endian bytes in `fmt`."""
    if fmt == pb.SAMPLE_FORMAT_INT16_LE:
        return np.clip(np.rint(frames * INT16_SCALE), -32768, 32767).astype("<i2").tobytes()
    return np.ascontiguousarray(frames, dtype="<f4").tobytes()


class Unparseable:
    """What a request deserializer returns for bytes that do not parse (see `server.ParseGuard`)."""

    def __init__(self, type_name: str, size: int, error: Exception):
        self.error = UnparseableRequestError(
            f"a request of {size} bytes does not parse as {type_name} ({quoted(str(error))}): send messages "
            "serialized from the samaudio.v1 proto, strings in valid UTF-8"
        )


class _TimedRequests:
    """A stream's requests with an audio timeout: waiting for the client may exceed the seconds of audio it sent
    by at most `timeout` seconds (0: no limit). A reader thread takes messages off gRPC's iterator into a
    two-message queue, so a slow client costs one idle thread, never the stream's deadline.

    `close` (the RPC's done callback) ends every wait at once: gRPC's own request iterator can miss a client's
    cancel (a race in grpcio's server, grpc/grpc#33038) and would leave the stream waiting for audio until the
    timeout."""

    _END = object()
    _POLL = 0.1  # seconds between looks at `close` while waiting for a message

    def __init__(self, requests: Iterator[Any], timeout: float):
        self.timeout = timeout
        self.audio_seconds = 0.0  # the caller adds the seconds of each audio message
        self.waited = 0.0
        self._requests = requests
        self._closed = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        threading.Thread(target=self._read, name="samaudio-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            for request in self._requests:
                if not self._put(request):
                    return
        except BaseException as e:  # noqa: BLE001 - the RPC ended (cancelled): hand it to the stream
            self._put(e)
        self._put(self._END)

    def _put(self, item: Any) -> bool:
        """Queue `item` unless the stream has ended (then nobody reads the queue: the thread must not block)."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """The RPC ended: a wait in `next` raises `CancelledError` at once, and the reader thread stops at its
        next message (or when gRPC ends the call)."""
        self._closed.set()

    def next(self) -> Any:
        """The next request, or None once the client half-closed."""
        budget = self.timeout + self.audio_seconds - self.waited if self.timeout else math.inf
        t0 = time.monotonic()
        while True:
            if self._closed.is_set():
                raise concurrent.futures.CancelledError("the call ended while the stream waited for a request")
            left = budget - (time.monotonic() - t0)
            try:
                item = self._queue.get(timeout=max(min(left, self._POLL), 0.0))
                break
            except queue.Empty:
                if left <= self._POLL:
                    raise AudioTimeoutError(
                        f"the stream waited {self.waited + budget:.1f} s for audio and got {self.audio_seconds:.1f} "
                        f"s of it: send audio at least as fast as real time (this server allows {self.timeout:g} s "
                        "of slack, Limits.audio_timeout_seconds), and half-close the stream when the audio ends"
                    ) from None
        self.waited += time.monotonic() - t0
        if item is self._END:
            self._queue.put(item)  # later calls see the end again
            return None
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Unparseable):
            raise item.error
        return item


class SeparationServicer(pb_grpc.SeparationServiceServicer):
    def __init__(
        self,
        model: Any,
        processor: Any,
        worker: Any,
        *,
        model_name: str,
        limits: Limits = Limits(),
        defaults: StreamDefaults = STREAM_DEFAULTS,
        version: str = "",
        authentication_required: bool = False,
    ):
        self.model = model
        self.processor = processor
        self.worker = worker
        self.model_name = model_name
        self.limits = limits
        self.defaults = defaults
        self.version = version
        self.authentication_required = authentication_required
        self.gate = StreamGate(limits.max_streams)
        try:
            self.check_cost(defaults.chunk_seconds, defaults.overlap_seconds, 1, defaults.solver_steps)
        except InvalidRequestError as e:
            raise ValueError(f"the server's default window does not fit its own limits: {e}") from e

    @property
    def video_supported(self) -> bool:
        """Whether the model was loaded with its vision encoder (takes masked videos)."""
        return getattr(self.model, "vision_encoder", None) is not None

    @property
    def span_predictor_name(self) -> str:
        """The loaded span predictor's name (a folder's last part, never the server's path); empty when none."""
        if getattr(self.model, "span_predictor", None) is None:
            return ""
        name = str(getattr(self.model.config, "span_predictor", None) or "span_predictor")
        return name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] if os.path.isdir(name) else name

    # ------------------------------------------------------------------ GetInfo

    def GetInfo(self, request: pb.GetInfoRequest, context: grpc.ServicerContext) -> pb.GetInfoResponse:
        lim = self.limits
        return pb.GetInfoResponse(
            models=[
                pb.ModelInfo(
                    name=self.model_name,
                    selected_by_default=True,
                    sample_rate_hertz=int(self.model.sample_rate),
                    default_chunk_seconds=self.defaults.chunk_seconds,
                    default_overlap_seconds=self.defaults.overlap_seconds,
                    default_solver_steps=self.defaults.solver_steps,
                    masked_video_supported=self.video_supported,
                    text_ranker=ranker_kind(getattr(self.model, "text_ranker", None)),
                    visual_ranker=ranker_kind(getattr(self.model, "visual_ranker", None)),
                    span_predictor=self.span_predictor_name,
                )
            ],
            sample_formats=list(SAMPLE_DTYPES),
            limits=pb.Limits(
                max_streams=lim.max_streams,
                max_stream_seconds=lim.max_stream_seconds,
                min_sample_rate_hertz=lim.min_sample_rate_hertz,
                max_sample_rate_hertz=lim.max_sample_rate_hertz,
                max_channel_count=lim.max_channel_count,
                max_request_bytes=lim.max_request_bytes,
                max_response_bytes=lim.max_response_bytes,
                max_solver_steps=lim.max_solver_steps,
                max_video_bytes=lim.max_video_bytes,
                max_chunk_seconds=lim.max_chunk_seconds,
                min_stride_seconds=lim.min_stride_seconds,
                max_frame_work=lim.max_frame_work,
                max_description_bytes=lim.max_description_bytes,
                audio_timeout_seconds=lim.audio_timeout_seconds,
                sample_rate_divisor_hertz=lim.sample_rate_divisor_hertz,
                max_candidates=lim.max_candidates,
            ),
            server_version=self.version,
            authentication_required=self.authentication_required,
        )

    # ------------------------------------------------------------------ Separate

    def Separate(
        self, request_iterator: Iterator[pb.SeparateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SeparateResponse]:
        try:
            self.gate.enter()
        except SAMAudioError as e:
            logger.info("stream from %s refused: %s: %s", context.peer(), status_code(e).name, e)
            context.abort(status_code(e), str(e))
        started, record = time.monotonic(), StreamRecord()
        try:
            yield from self._separate(request_iterator, context, record)
        except GeneratorExit:  # gRPC closes the response generator of a stream the client cancelled
            record.outcome = "CANCELLED by the client"
            raise
        except (SAMAudioError, concurrent.futures.CancelledError, grpc.RpcError) as e:
            if not context.is_active():  # the client cancelled or went away: nobody to tell
                record.outcome = f"CANCELLED by the client ({type(e).__name__})"
                return
            if isinstance(e, grpc.RpcError):
                record.outcome = type(e).__name__
                raise
            record.outcome = f"{status_code(e).name}: {e}"
            context.abort(status_code(e), str(e))
        except Exception as e:  # a bug of ours: the client gets INTERNAL, the log gets the traceback
            logger.exception("stream failed")
            record.outcome = f"INTERNAL: {type(e).__name__}"
            context.abort(
                grpc.StatusCode.INTERNAL, f"internal server error ({type(e).__name__}: {e}); see the server log"
            )
        finally:
            self.gate.leave()
            # One line per stream, for operators: who, how much, how long, how it ended (never the token).
            seconds = record.frames / record.rate if record.rate else 0.0
            logger.info(
                "stream from %s: %d frames (%.2f s of audio), %d window%s, %.2f s, %s",
                context.peer(),
                record.frames,
                seconds,
                record.windows,
                "" if record.windows == 1 else "s",
                time.monotonic() - started,
                record.outcome,
            )

    def _separate(
        self, requests: Iterator[pb.SeparateRequest], context: grpc.ServicerContext, record: StreamRecord
    ) -> Iterator[pb.SeparateResponse]:
        from samaudio.streaming import StreamingSeparator

        started = time.monotonic()
        requests = _TimedRequests(requests, self.limits.audio_timeout_seconds)
        if not context.add_callback(requests.close):  # the call ended already: gRPC will not call it
            requests.close()
        first = requests.next()
        if first is None or first.WhichOneof("streaming_request") != "config":
            got = "no request" if first is None else first.WhichOneof("streaming_request") or "an empty request"
            raise ProtocolError(f"the first request must carry the config, got {got}: send SeparationConfig first")
        config = self._effective_config(first.config)
        video = self._masked_video(first.config, config) if first.config.HasField("masked_video") else None
        del first  # the video's bytes: the stream keeps only its frames
        rate, channels, fmt = config.sample_rate_hertz, config.channel_count, config.sample_format
        record.rate = rate
        max_frames = math.floor(self.limits.max_stream_seconds * rate) if self.limits.max_stream_seconds else None

        # What the stream's pushing thread and the device thread tell this generator, in order: stem blocks with
        # the frames they finish (pushing thread), evaluations done (device thread, so a bar moves inside a
        # window), the end or an error.
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        worker = StreamWorker(self.worker)
        separator = StreamingSeparator(
            self.model,
            self.processor,
            config.description,
            [(SIGNS[a.sign], a.start_seconds, a.end_seconds) for a in config.anchors],
            sample_rate=rate,
            channels=channels,
            chunk_seconds=config.chunk_seconds,
            overlap_seconds=config.overlap_seconds,
            seed=config.seed,
            ode_opt=self._ode_opt(config.solver_steps),
            max_batch=self.defaults.windows_per_stream_call,
            on_step=lambda done, planned: events.put(("evaluations", (done, planned))),
            worker=worker,
            video=video,
            candidates=config.candidates,
            predict_spans=config.predict_spans,
            span_gate=config.span_gate,
            span_threshold=config.span_threshold,
            prompts=self._prompts(config),
            null_sum=config.null_sum,
            total_frames=config.total_frames if config.HasField("total_frames") else None,
            residual=pb.STEM_RESIDUAL in config.stems,  # a target-only stream decodes no residual
        )

        plan = separator.settings.plan
        if plan.frames * plan.hop < round(config.chunk_seconds * self.model.sample_rate):
            # a short stream of known length runs as one window of its own length: say so
            config.chunk_seconds = plan.frames * plan.hop / plan.sample_rate
            config.overlap_seconds = 0.0
        finished = threading.Event()

        def on_done() -> None:  # runs when the RPC ends for any reason: stop the stream and drop its windows
            if not finished.is_set():
                separator.cancel()

        if not context.add_callback(on_done):  # the call ended already: gRPC will not call it
            on_done()
        yield pb.SeparateResponse(
            accepted=pb.SeparationAccepted(effective_config=config, model_sample_rate_hertz=int(self.model.sample_rate))
        )

        packer = _Packer(config, self.limits.max_response_bytes)

        def feed() -> None:  # the stream's pushing thread: requests in, events out
            try:
                while (request := requests.next()) is not None:
                    kind = request.WhichOneof("streaming_request")
                    if kind != "audio_content":
                        raise ProtocolError(f"a stream takes one config, first; got {kind or 'an empty request'} later")
                    frames = decode_audio(request.audio_content, fmt, channels)  # (n, channels) float32
                    requests.audio_seconds += len(frames) / rate
                    sent = separator.counters.frames_in + len(frames)
                    if max_frames is not None and sent > max_frames:
                        # The frames up to the limit are separated and sent, so what the client got is exactly the
                        # stems of its first max_frames frames; then the status says so (issue 19).
                        head = frames[: max_frames - separator.counters.frames_in]
                        packer.mix(head)
                        blocks = separator.push(head) + separator.finish()
                        finished.set()
                        events.put(("blocks", (blocks, (separator.counters.frames_out, separator.counters.frames_in))))
                        raise StreamTooLongError(
                            f"the stream sent {sent} frames ({sent / rate:.6g} s at {rate} Hz), more than this "
                            f"server's limit of {max_frames} frames ({self.limits.max_stream_seconds:g} s): the stems "
                            f"of the first {max_frames} frames were sent; split longer audio into several streams"
                        )
                    record.frames = sent
                    packer.mix(frames)
                    blocks = separator.push(frames)
                    record.windows = separator.counters.windows_done
                    events.put(("blocks", (blocks, (separator.counters.frames_out, separator.counters.frames_in))))
                blocks = separator.finish()
                record.windows = separator.counters.windows_done
                finished.set()
                events.put(("blocks", (blocks, (separator.counters.frames_out, separator.counters.frames_in))))
                events.put(("end", None))
            except BaseException as e:  # noqa: BLE001 - delivered to the generator, which ends the RPC with it
                events.put(("error", e))

        threading.Thread(target=feed, name="samaudio-stream", daemon=True).start()
        progress = _ProgressState()
        while True:
            kind, value = events.get()
            if kind == "error":
                raise value
            if kind == "end":
                break
            if kind == "blocks":  # the stems, then the progress that counts them
                blocks, frames = value
                yield from packer.pack(blocks)
                progress.update("frames", frames)
            else:  # every evaluation is told: a bar moves at each solver step, also inside one window
                progress.update(kind, value)
            message = progress.message()
            if message is not None:
                yield message
        yield pb.SeparateResponse(
            summary=pb.SeparationSummary(
                frames_in=separator.counters.frames_in,
                frames_out=separator.counters.frames_out,
                windows=separator.counters.windows_done,
                model_evaluations=separator.counters.nfe,
                elapsed_seconds=time.monotonic() - started,
                candidates_evaluated=separator.counters.candidates_evaluated,
                chosen_scores=separator.counters.chosen_scores,
                windows_gated=separator.counters.windows_gated,
            )
        )

    # ------------------------------------------------------------------ helpers

    def _effective_config(self, config: pb.SeparationConfig) -> pb.SeparationConfig:
        """Check what the library does not know (formats, limits, model names) and fill in the defaults."""
        lim = self.limits
        if config.model not in ("", self.model_name):
            raise InvalidRequestError(
                f"this server serves the model {self.model_name!r}, not {quoted(config.model)}: leave model empty "
                f"or ask GetInfo for the models served"
            )
        for name, text in [("the description", config.description)] + [
            (f"prompts[{i}].description", p.description) for i, p in enumerate(config.prompts)
        ]:
            size = len(text.encode())
            if size > lim.max_description_bytes:
                raise InvalidRequestError(
                    f"{name} is {size} bytes, more than this server's limit of {lim.max_description_bytes} "
                    f"(Limits.max_description_bytes): name the sound in a few words"
                )
        if config.sample_format not in SAMPLE_DTYPES:
            raise InvalidAudioError(
                f"sample_format {config.sample_format} is not supported: use SAMPLE_FORMAT_FLOAT32_LE or "
                "SAMPLE_FORMAT_INT16_LE (interleaved, little-endian)"
            )
        if not lim.min_sample_rate_hertz <= config.sample_rate_hertz <= lim.max_sample_rate_hertz:
            raise InvalidAudioError(
                f"sample_rate_hertz={config.sample_rate_hertz} is outside {lim.min_sample_rate_hertz}.."
                f"{lim.max_sample_rate_hertz} Hz: send audio at a rate in that range (48000 needs no resampling)"
            )
        model_rate = int(self.model.sample_rate)
        shared = math.gcd(config.sample_rate_hertz, model_rate)
        if shared < lim.sample_rate_divisor_hertz:
            raise InvalidAudioError(
                f"sample_rate_hertz={config.sample_rate_hertz} shares only {shared} Hz with the model's {model_rate} "
                "Hz; this server takes rates whose gcd with it is at least "
                f"{lim.sample_rate_divisor_hertz} Hz (Limits.sample_rate_divisor_hertz; every multiple of 25 Hz): "
                "resample the audio to a common rate such as 44100 or 48000 Hz first"
            )
        if not 1 <= config.channel_count <= lim.max_channel_count:
            raise InvalidAudioError(
                f"channel_count={config.channel_count} is outside 1..{lim.max_channel_count}: set the number of "
                "interleaved channels of your audio"
            )
        named = [(f"anchors[{i}]", a) for i, a in enumerate(config.anchors)] + [
            (f"prompts[{j}].anchors[{i}]", a) for j, p in enumerate(config.prompts) for i, a in enumerate(p.anchors)
        ]
        for name, anchor in named:
            if anchor.sign not in SIGNS:
                raise InvalidAnchorError(
                    f"{name} has sign {anchor.sign}: use ANCHOR_SIGN_POSITIVE (sound present) or "
                    "ANCHOR_SIGN_NEGATIVE (sound absent)"
                )
        has_video = config.HasField("masked_video")
        if has_video and not self.video_supported:
            raise VisionUnavailableError(
                "this server's model was loaded without its vision encoder and takes no masked_video: send the "
                "stream without it, or use a server started with --vision (GetInfo: masked_video_supported)"
            )
        from samaudio.streaming import check_sound

        def signed(anchors) -> list[tuple[str, float, float]]:  # the library's triples (signs checked above)
            return [(SIGNS[a.sign], a.start_seconds, a.end_seconds) for a in anchors]

        if not config.prompts:
            check_sound(config.description, signed(config.anchors), video=has_video)  # the library's rule and words
        for j, p in enumerate(config.prompts):
            check_sound(p.description, signed(p.anchors), where=f"prompts[{j}]")
        if config.HasField("solver_steps") and not 1 <= config.solver_steps <= lim.max_solver_steps:
            raise InvalidRequestError(
                f"solver_steps={config.solver_steps} is outside 1..{lim.max_solver_steps}: leave it unset for the "
                f"default {self.defaults.solver_steps}"
            )
        self._check_quality(config, has_video)
        stems = list(config.stems)
        if any(s not in (pb.STEM_TARGET, pb.STEM_RESIDUAL) for s in stems) or len(set(stems)) != len(stems):
            raise InvalidRequestError(
                f"stems {stems} must name STEM_TARGET and/or STEM_RESIDUAL once each; leave it empty for both"
            )
        effective = pb.SeparationConfig()
        effective.CopyFrom(config)
        effective.model = self.model_name
        d = self.defaults
        effective.chunk_seconds = config.chunk_seconds if config.HasField("chunk_seconds") else d.chunk_seconds
        effective.overlap_seconds = config.overlap_seconds if config.HasField("overlap_seconds") else d.overlap_seconds
        effective.seed = config.seed if config.HasField("seed") else d.seed
        effective.solver_steps = config.solver_steps if config.HasField("solver_steps") else d.solver_steps
        if not stems:
            effective.stems[:] = [pb.STEM_TARGET, pb.STEM_RESIDUAL]
        effective.candidates = config.candidates if config.HasField("candidates") else self.defaults.candidates
        effective.predict_spans = config.predict_spans
        has_spans = getattr(self.model, "span_predictor", None) is not None
        effective.span_gate = config.span_gate if config.HasField("span_gate") else has_spans
        effective.span_threshold = config.span_threshold if config.HasField("span_threshold") else span_threshold()
        self.check_cost(
            effective.chunk_seconds, effective.overlap_seconds, config.channel_count, effective.solver_steps,
            effective.candidates, max(1, len(config.prompts)),
        )
        if has_video:  # the bytes stay with the request: the effective config reports the video's shape
            effective.masked_video.ClearField("source")
            effective.masked_video.ClearField("masks")
        return effective

    def check_cost(
        self, chunk: float, overlap: float, channels: int, steps: int, candidates: int = 1, prompts: int = 1
    ) -> None:
        """The per-request cost caps of `Limits`, on numbers not yet used in any arithmetic (issue 19)."""
        lim = self.limits
        if not (math.isfinite(chunk) and 0 < chunk <= lim.max_chunk_seconds):
            raise InvalidRequestError(
                f"chunk_seconds={chunk:g} is outside (0, {lim.max_chunk_seconds:g}]: this server's longest window "
                f"(Limits.max_chunk_seconds) is {lim.max_chunk_seconds:g} s; leave it unset for the default "
                f"{self.defaults.chunk_seconds:g}"
            )
        if not (math.isfinite(overlap) and 0 <= overlap):
            raise InvalidRequestError(f"overlap_seconds={overlap:g} is not a finite number of seconds >= 0")
        stride = chunk - overlap
        if stride <= 0:
            return  # the library says chunk <= overlap, in its words
        if stride < lim.min_stride_seconds:
            raise InvalidRequestError(
                f"chunk_seconds {chunk:g} - overlap_seconds {overlap:g} = a stride of {stride:.4g} s, below this "
                f"server's smallest stride of {lim.min_stride_seconds:g} s (Limits.min_stride_seconds): use a "
                "shorter overlap"
            )
        # each candidate is one more solve of every window, each prompt one more batch row per channel
        work = prompts * channels * steps * candidates * chunk / stride
        if work > lim.max_frame_work:
            each = f" x {candidates} candidates" if candidates > 1 else ""
            rows = f"{prompts} prompts x " if prompts > 1 else ""
            raise InvalidRequestError(
                f"{rows}{channels} channel(s) x {steps} solver steps{each} x {chunk / stride:.3g} windows per frame "
                f"(chunk {chunk:g} s / stride {stride:.4g} s) is {work:.4g} units of model work per frame, more than this "
                f"server's {lim.max_frame_work:g} (Limits.max_frame_work): use fewer solver steps, a shorter "
                "overlap or fewer channels per stream"
                + (", or fewer candidates" if candidates > 1 else "")
                + (", or fewer prompts" if prompts > 1 else "")
            )

    def _check_quality(self, config: pb.SeparationConfig, has_video: bool) -> None:
        """Candidates, span prediction and the span gate: in range, and only for parts this server loaded."""
        lim = self.limits
        if config.HasField("candidates") and not 1 <= config.candidates <= lim.max_candidates:
            raise InvalidRequestError(
                f"candidates={config.candidates} is outside 1..{lim.max_candidates} (each candidate costs about one "
                "more separation of every window): ask for fewer, or leave it unset for 1"
            )
        text, visual = getattr(self.model, "text_ranker", None), getattr(self.model, "visual_ranker", None)
        if config.candidates > 1 and text is None and (visual is None or not has_video):
            raise PartUnavailableError(
                f"candidates={config.candidates} needs a ranker to choose among them, but the server was started "
                "without a text ranker: ask for 1 candidate, or use a server started with the server option "
                "--text-ranker (GetInfo: ModelInfo.text_ranker)"
            )
        if getattr(self.model, "span_predictor", None) is None:
            asked = [name for name in ("predict_spans", "span_gate") if getattr(config, name)]
            if asked:
                raise PartUnavailableError(
                    f"{' and '.join(asked)} need(s) the span predictor, but the server was started without one: "
                    "leave them unset, or use a server started with the server option --span-predictor "
                    "(GetInfo: ModelInfo.span_predictor)"
                )
        if config.HasField("span_threshold") and not 0.0 <= config.span_threshold <= 1.0:
            raise InvalidRequestError(
                f"span_threshold={config.span_threshold} is not a frame probability in 0..1: leave it unset for "
                f"{span_threshold()}"
            )

    def _masked_video(self, sent: pb.SeparationConfig, effective: pb.SeparationConfig) -> Any:
        """The config's masked video as the library's `VideoPrompt`; its shape is reported in `effective`."""
        video = unpack_masked_video(sent.masked_video, self.limits.max_video_bytes)
        effective.masked_video.frame_count = video.frames.shape[0]
        if sent.masked_video.WhichOneof("source") == "encoded_file":  # report what the file holds
            effective.masked_video.height_pixels, effective.masked_video.width_pixels = video.size
            effective.masked_video.frames_per_second = video.frames_per_second
        return video

    @staticmethod
    def _ode_opt(steps: int) -> dict[str, Any] | None:
        """The ODE of `steps` midpoint steps: the effective config's steps are the steps run (issue 15: a server
        default other than the model's was reported but not used)."""
        from samaudio.model.model import DEFAULT_ODE_OPT, midpoint_ode_opt

        ode_opt = midpoint_ode_opt(steps)
        return None if ode_opt == DEFAULT_ODE_OPT else ode_opt  # None: the model's own default, exactly

    @staticmethod
    def _prompts(config: pb.SeparationConfig) -> list[Any] | None:
        """The config's prompts as the library's `Prompt`s; None for a config with one description."""
        if not config.prompts:
            return None
        from samaudio.streaming import Prompt

        return [
            Prompt(
                p.description,
                [(SIGNS[a.sign], a.start_seconds, a.end_seconds) for a in p.anchors],
                p.seed if p.HasField("seed") else None,
            )
            for p in config.prompts
        ]


class _ProgressState:
    """The latest progress of a stream, sent when it changed."""

    def __init__(self) -> None:
        self.frames = (0, 0)
        self.evaluations = (0, 0)
        self._sent: tuple[tuple[int, int], tuple[int, int]] | None = None

    def update(self, kind: str, value: tuple[int, int]) -> None:
        if kind == "frames":
            self.frames = value
        else:
            self.evaluations = value

    def message(self) -> pb.SeparateResponse | None:
        now = (self.frames, self.evaluations)
        if now == self._sent or now == ((0, 0), (0, 0)):
            return None
        self._sent = now
        return pb.SeparateResponse(
            progress=pb.SeparationProgress(
                frames_done=self.frames[0],
                frames_known=self.frames[1],
                model_evaluations_done=self.evaluations[0],
                model_evaluations_planned=self.evaluations[1],
            )
        )


class _Packer:
    """`SeparatedBlock`s -> `StemBlock` messages in the stream's format, each within max_response_bytes."""

    def __init__(self, config: pb.SeparationConfig, max_response_bytes: int):
        self.fmt = config.sample_format
        self.want_target = pb.STEM_TARGET in config.stems
        self.want_residual = pb.STEM_RESIDUAL in config.stems
        self.prompts = len(config.prompts)  # 0: one description, its target in target_audio
        self.max_response_bytes = max_response_bytes
        # int16 null-sum works on the integers the client sent: keep them until their stems are packed
        self.int16_null_sum = config.null_sum and self.fmt == pb.SAMPLE_FORMAT_INT16_LE
        self._mix: list[np.ndarray] = []  # appended by the pushing thread, taken by the generator's
        self._mix_start = 0
        self._lock = threading.Lock()
        self.clipped = 0

    def mix(self, frames: np.ndarray) -> None:
        if self.int16_null_sum:
            with self._lock:
                self._mix.append(frames)

    def _take_mix(self, start: int, n: int) -> np.ndarray:
        with self._lock:
            mix = np.concatenate(self._mix) if len(self._mix) != 1 else self._mix[0]
            assert start == self._mix_start and len(mix) >= n, (start, self._mix_start, len(mix), n)
            self._mix = [mix[n:]] if len(mix) > n else []
            self._mix_start += n
        return mix[:n]

    def pack(self, blocks: list[Any]) -> Iterator[pb.SeparateResponse]:
        fmt = self.fmt
        for block in blocks:
            frames, channels = block.target.shape
            targets = block.targets or [block.target]
            stems = len(targets) * self.want_target + self.want_residual
            frame_bytes = SAMPLE_DTYPES[fmt].itemsize * channels * max(1, stems)
            step = max(1, self.max_response_bytes // frame_bytes)
            mix = self._take_mix(block.start, frames) if self.int16_null_sum else None
            for lo in range(0, frames, step):
                hi = min(frames, lo + step)
                if mix is not None:
                    target_bytes, residual_bytes, clipped = null_sum_int16(mix[lo:hi], [t[lo:hi] for t in targets])
                    if clipped and not self.clipped:
                        logger.warning("null-sum residual clipped to int16 (%d samples in this block)", clipped)
                    self.clipped += clipped
                else:
                    target_bytes = [encode_audio(t[lo:hi], fmt) for t in targets]
                    residual_bytes = encode_audio(block.residual[lo:hi], fmt)
                if not self.want_target:
                    target_bytes = [b""] * len(targets)
                message = pb.StemBlock(
                    start_frame=block.start + lo,
                    frame_count=hi - lo,
                    residual_audio=residual_bytes if self.want_residual else b"",
                )
                if self.prompts:
                    message.prompt_target_audio.extend(target_bytes)
                else:
                    message.target_audio = target_bytes[0]
                yield pb.SeparateResponse(stem_block=message)
