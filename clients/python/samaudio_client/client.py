"""The thin samaudio client: separate arrays or files on a samaudio server, no torch needed.

    client = Client("gpu-box:50051", token="...")
    stems = client.separate(audio, 44100, "snare drum", spans=["+1.2:3.4"])   # audio: (frames, channels)
    stems.target, stems.residual                                               # (frames, channels) float32
    stems = client.separate(audio, 44100, ["vocals", "drums"], null_sum=True)  # several sounds, one stream
    stems["vocals"], stems["drums"], stems["residual"]                         # by name; they sum to audio
    client.separate_file("take.wav", "snare drum", start=12.0, duration=8.0, on_block=writer)
    client.separate_file("take.wav", "", video=Video.from_file("take.mp4", masks="take-masks.npy"))  # visual prompt

One `Separate` stream per call (see proto/samaudio/v1/separation.proto): the config, then the audio in
blocks read lazily (from disk for files, so memory stays flat), while stem blocks come back as soon as they
are final. A call that has not got its first response yet is retried with backoff when the server is
UNAVAILABLE (down, starting or draining); once a stream has started nothing is retried, since the
server has already done work for it. Every failure of a call is a `CallError` with the gRPC code and
the server's message. `AsyncClient` is the same on `grpc.aio`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypedDict, Unpack, overload

import grpc
import numpy as np

from samaudio.defaults import DEFAULT_PORT
from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_client.errors import CallError, ClientError, connection_failure
from samaudio_client.files import Region, read_blocks
from samaudio_client.spans import Span, as_span, to_region

__all__ = [
    "Client",
    "AsyncClient",
    "Stems",
    "SeparatedBlock",
    "Video",
    "VideoError",
    "Summary",
    "Settings",
    "ServerInfo",
    "ModelInfo",
    "SeparationOptions",
    "ClientError",
    "CallError",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], Any]  # (frames_done, frames_known)
StepFn = Callable[[int, int], Any]  # (model_evaluations_done, model_evaluations_planned): moves inside a window
SpanLike = Span | str | tuple[str, float, float]

_CHANNEL_OPTIONS = [
    # Stem blocks of a long window at a high rate can be large; the server splits them to its own limit.
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # After a failed connect gRPC waits its reconnect backoff (1 s and growing by default) before it tries
    # again, failing calls fast meanwhile; keep it below our own retry delays so that each retry really connects.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


@dataclass(frozen=True)
class SeparatedBlock:
    """A final, contiguous piece of every stem, as it arrives."""

    start: int  # first frame, counted from the first frame sent
    target: np.ndarray  # (frames, channels) float32, read-only; the first description's
    residual: np.ndarray  # (frames, channels) float32, read-only
    targets: tuple[np.ndarray, ...] = ()  # one per description, in order, when several were given


StemBlock = SeparatedBlock  # its earlier name; `StemBlock` is the wire message (samaudio.v1) it is decoded from
BlockFn = Callable[[SeparatedBlock], Any]


@dataclass(frozen=True)
class Settings:
    """The settings a stream ran with: the server's defaults filled in."""

    model: str
    chunk_seconds: float
    overlap_seconds: float
    seed: int
    solver_steps: int
    model_sample_rate: int  # the rate the model works at; the audio is resampled inside
    candidates: int = 1  # candidate solutions per window, one kept by the server's ranker
    predict_spans: bool = False  # windows prompted with the spans the server's span predictor found
    span_gate: bool = False  # windows without predicted activity skipped: target silence, residual the input


@dataclass(frozen=True)
class Summary:
    """The closing account of a stream."""

    settings: Settings
    frames_in: int
    frames_out: int
    windows: int
    model_evaluations: int
    elapsed_seconds: float  # on the server, from the config to the summary
    candidates_evaluated: int = 0  # candidate solutions solved, over windows and channels
    chosen_scores: tuple[float, ...] = ()  # the ranker's score of each kept candidate, per window and channel
    windows_gated: int = 0  # windows the span gate skipped


@dataclass(frozen=True)
class Stems:
    """The stems of a separation. With several descriptions, `targets` holds one per description, by name
    (a repeated one gets " (2)", " (3)"), and `stems[name]` reads one of them, or "residual"."""

    target: np.ndarray  # (frames, channels) float32 at the input's rate; (frames,) for a 1-D input
    residual: np.ndarray  # same shape as target
    summary: Summary
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # description -> its target, in order

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.targets:
            return self.targets[name]
        if name == "residual":
            return self.residual
        raise KeyError(f"no stem {name!r}: the stems are {', '.join([*self.targets, 'residual'])}")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    default: bool
    sample_rate: int
    chunk_seconds: float
    overlap_seconds: float
    solver_steps: int
    masked_video_supported: bool = False  # takes a `Video` (the server loaded the model's vision encoder)
    text_ranker: str = ""  # kind of the server's text ranker ("judge", "clap", "ensemble"); "" for none
    visual_ranker: str = ""  # kind of its visual ranker ("imagebind"); "" for none
    span_predictor: str = ""  # name of its span predictor; "" for none


@dataclass(frozen=True)
class ServerInfo:
    target: str
    health: str  # grpc.health.v1 status of the server: SERVING, NOT_SERVING (draining), ...
    version: str
    models: list[ModelInfo]
    sample_formats: list[str]
    limits: dict[str, float]  # Limits fields; 0 means no limit
    authentication_required: bool


class SeparationOptions(TypedDict, total=False):
    """Optional settings of a separation; each one left out takes the server's default."""

    model: str  # a name from `info().models`
    chunk_seconds: float  # model window length
    overlap_seconds: float  # crossfade between windows, < chunk_seconds
    seed: int  # initial noise of the solver: same input and seed, same stems
    solver_steps: int  # ODE steps (two model evaluations each)
    candidates: int  # candidate solutions per window, > 1 needs a server with a ranker (ModelInfo.text_ranker)
    predict_spans: bool  # prompt each window with predicted spans; needs a span predictor (ModelInfo.span_predictor)
    span_gate: bool  # skip windows without predicted activity; default: on when the server has a span predictor
    null_sum: bool  # residual = input minus the targets, so that the stems sum back to the input


class VideoError(ClientError):
    """A video prompt that cannot be sent: an unreadable file, frames or masks of the wrong shape or type."""


@dataclass(frozen=True, eq=False)
class Video:
    """A visual prompt: a video of the scene with the sounding object marked, sent with a separation's config.

    The video starts at the first frame of audio sent (for `separate_file` with `start`, at the region's start),
    whatever its own length. Exactly one source is set; build one with `from_file` (the file's bytes go out as
    they are: the server decodes them, this client never does) or `from_frames` (raw RGB frames). `masks`
    mark the object, one byte per pixel of every frame, non-zero on it: the server blacks those pixels out
    before the model sees them; empty when the frames are masked already. Needs a model served with its vision
    encoder (`ModelInfo.masked_video_supported`; `samaudio-server --vision`), else the call fails with
    FAILED_PRECONDITION.
    """

    encoded_file: bytes | None = None  # a video file (MP4, MKV, WebM, ...) as stored
    rgb_frames: np.ndarray | None = None  # (N, H, W, 3) uint8, frame i shown from i / frames_per_second
    frames_per_second: float = 0.0  # of rgb_frames; an encoded file's own times are used
    masks: bytes = b""  # N * H * W bytes in frame, row, pixel order (H, W as decoded for a file)

    def __post_init__(self) -> None:
        if (self.encoded_file is None) == (self.rgb_frames is None):
            raise VideoError(
                "a Video needs exactly one of encoded_file and rgb_frames: use Video.from_file or Video.from_frames"
            )

    @classmethod
    def from_file(cls, path: str | Path, masks: np.ndarray | str | Path | None = None) -> Video:
        """The video file at `path`, sent as stored. `masks`: an array (frames, height, width) of the decoded
        frames, non-zero on the object, or a file of them: `.npy` holding such an array, else raw bytes."""
        data = _read(path, "video")
        if not data:
            raise VideoError(f"video file {path} is empty: give a video file (MP4, MKV, WebM, ...)")
        if masks is None:
            mask_bytes = b""
        elif isinstance(masks, (str, Path)):
            mask_bytes = _mask_file(Path(masks))
        else:
            mask_bytes = _mask_bytes(np.asarray(masks), None)
        return cls(encoded_file=data, masks=mask_bytes)

    @classmethod
    def from_frames(cls, frames: np.ndarray, frames_per_second: float, masks: np.ndarray | None = None) -> Video:
        """Raw frames `(N, H, W, 3)` uint8 RGB shown from 0 s at `frames_per_second`; `masks` `(N, H, W)`,
        non-zero on the object."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
            first = frames.ndim == 4 and frames.shape[1] == 3
            hint = " (channels first? use frames.transpose(0, 2, 3, 1))" if first else ""
            raise VideoError(
                f"video frames of shape {frames.shape}: give (frames, height, width, 3) RGB, none empty{hint}"
            )
        if frames.dtype != np.uint8:
            raise VideoError(
                f"video frames of dtype {frames.dtype}: give uint8 RGB 0..255, e.g. "
                "(x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]"
            )
        fps = float(frames_per_second)
        if not (np.isfinite(fps) and fps > 0):
            raise VideoError(f"frames_per_second={frames_per_second}: give the frames' rate, a number > 0, e.g. 25")
        mask_bytes = b"" if masks is None else _mask_bytes(np.asarray(masks), frames.shape[:3])
        return cls(rgb_frames=np.ascontiguousarray(frames), frames_per_second=fps, masks=mask_bytes)

    def message(self) -> pb.MaskedVideo:
        """The `SeparationConfig.masked_video` this video goes out as."""
        if self.encoded_file is not None:
            return pb.MaskedVideo(encoded_file=self.encoded_file, masks=self.masks)
        N, H, W, _ = self.rgb_frames.shape
        return pb.MaskedVideo(
            width_pixels=W,
            height_pixels=H,
            frames_per_second=self.frames_per_second,
            rgb_frames=self.rgb_frames.tobytes(),  # frame, row, pixel, R G B
            masks=self.masks,
        )


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise VideoError(f"{path}: no such {what} file") from None
    except OSError as err:
        raise VideoError(f"{path}: cannot read the {what} file: {err.strerror or err}") from None


def _mask_bytes(masks: np.ndarray, shape: tuple[int, ...] | None) -> bytes:
    """(N, H, W) masks, non-zero on the object -> one byte per pixel; `shape` the frames' (N, H, W) when known."""
    if masks.ndim != 3 or (shape is not None and masks.shape != shape):
        want = f"{shape}, one per frame" if shape is not None else "(frames, height, width)"
        raise VideoError(f"video masks of shape {masks.shape}: give {want}, non-zero on the object")
    return (masks != 0).astype(np.uint8).tobytes()  # (N, H, W) 0/1


def _mask_file(path: Path) -> bytes:
    if path.suffix.lower() != ".npy":
        data = _read(path, "mask")
        if not data:
            raise VideoError(f"mask file {path} is empty: give one byte per pixel of every frame, or a .npy array")
        return data
    try:
        masks = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise VideoError(f"{path}: no such mask file") from None
    except (OSError, ValueError) as err:
        raise VideoError(f"{path}: not a .npy array of masks (frames, height, width): {err}") from None
    return _mask_bytes(masks, None)


# --------------------------------------------------------------------------------------------------------------
# Messages in and out, shared by the sync and async clients


def _config(
    description: str | Sequence[str],
    spans: Sequence[Span],
    sample_rate: int,
    channels: int,
    options: SeparationOptions,
    video: Video | None = None,
    total_frames: int | None = None,
) -> pb.SeparationConfig:
    unknown = sorted(set(options) - set(SeparationOptions.__annotations__))
    if unknown:
        raise TypeError(
            f"unknown separation option {unknown[0]!r}; known: {', '.join(SeparationOptions.__annotations__)}"
        )
    anchors = [
        pb.Anchor(
            sign=pb.ANCHOR_SIGN_POSITIVE if s.sign == "+" else pb.ANCHOR_SIGN_NEGATIVE,
            start_seconds=s.start_seconds,
            end_seconds=s.end_seconds,
        )
        for s in spans
    ]
    config = pb.SeparationConfig(
        model=options.get("model") or "",
        sample_rate_hertz=int(sample_rate),
        channel_count=int(channels),
        sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE,
        null_sum=bool(options.get("null_sum")),
    )
    descriptions = _descriptions(description)
    if len(descriptions) == 1:
        config.description = descriptions[0]
        config.anchors.extend(anchors)
    else:  # several sounds: one stream, one prompt each
        if anchors or video is not None:
            raise ClientError(
                "spans and a video prompt mark one sound: give them with one description, not several"
            )
        config.prompts.extend(pb.Prompt(description=d) for d in descriptions)
    if total_frames is not None:  # windows are planned for it: a short input costs its own length
        config.total_frames = int(total_frames)
    for name in SeparationOptions.__annotations__:
        if name != "model" and options.get(name) is not None:
            setattr(config, name, options[name])
    if video is not None:
        if not isinstance(video, Video):
            raise TypeError(f"video is a {type(video).__name__}: give a Video (Video.from_file or Video.from_frames)")
        config.masked_video.CopyFrom(video.message())
    return config


def _descriptions(description: str | Sequence[str]) -> list[str]:
    if isinstance(description, str):
        return [description]
    descriptions = list(description)
    if not descriptions or not all(isinstance(d, str) for d in descriptions):
        raise ClientError(f"description is {description!r}: give a str, or a non-empty list of str")
    return descriptions


def _names(descriptions: Sequence[str]) -> list[str]:
    """Descriptions as unique stem names: a repeated one gets " (2)", " (3)"."""
    names: list[str] = []
    for d in descriptions:
        name, n = d, 2
        while name in names:
            name, n = f"{d} ({n})", n + 1
        names.append(name)
    return names


class _Outgoing:
    """The request side of one attempt: the config, then the blocks; counts frames, keeps a read error.

    An exception inside a request iterator reaches the caller only as a CANCELLED call; keeping it here
    lets the call re-raise the real cause (an unreadable file, say).
    """

    def __init__(self, config: pb.SeparationConfig, blocks: Iterable[np.ndarray]) -> None:
        self.config = config
        self.blocks = iter(blocks)
        self.frames = 0
        self.error: BaseException | None = None

    def message(self, block: np.ndarray) -> pb.SeparateRequest:
        channels = self.config.channel_count
        if block.ndim != 2 or block.shape[1] != channels:
            raise ClientError(f"audio block of shape {block.shape}, expected (frames, {channels})")
        self.frames += len(block)
        data = np.ascontiguousarray(block, dtype="<f4")
        return pb.SeparateRequest(audio_content=data.tobytes())

    def __iter__(self) -> Iterator[pb.SeparateRequest]:
        yield pb.SeparateRequest(config=self.config)
        try:
            for block in self.blocks:
                yield self.message(block)
        except Exception as err:
            self.error = err
            raise

    async def aiter(self) -> AsyncIterator[pb.SeparateRequest]:
        yield pb.SeparateRequest(config=self.config)
        try:
            while (block := await asyncio.to_thread(next, self.blocks, None)) is not None:
                yield self.message(block)
        except Exception as err:
            self.error = err
            raise


class _Incoming:
    """The response side of one attempt: checks the protocol, decodes blocks, hands them on."""

    def __init__(
        self,
        channels: int,
        target: str,
        on_block: BlockFn,
        on_progress: ProgressFn | None,
        on_step: StepFn | None = None,
    ) -> None:
        self.channels = channels
        self.target = target
        self.on_block = on_block
        self.on_progress = on_progress
        self.on_step = on_step
        self._step = (0, 0)
        self.started = False
        self.frames = 0
        self.settings: Settings | None = None
        self.summary: pb.SeparationSummary | None = None

    def _fault(self, what: str) -> CallError:
        return CallError(grpc.StatusCode.INTERNAL, f"the server broke the protocol: {what}", self.target)

    def _decode(self, data: bytes, frames: int) -> np.ndarray:
        stem = np.frombuffer(data, dtype="<f4")  # (frames * channels,)
        if stem.size != frames * self.channels:
            raise self._fault(f"a stem block of {stem.size} samples, expected {frames} x {self.channels}")
        return stem.reshape(frames, self.channels)  # (frames, channels)

    def feed(self, response: pb.SeparateResponse) -> Any:
        """Take one response; returns what `on_block` returned (an awaitable for async callbacks)."""
        kind = response.WhichOneof("streaming_response")
        if not self.started and kind != "accepted":
            raise self._fault(f"the first response is {kind!r}, not 'accepted'")
        self.started = True
        if kind == "accepted":
            c = response.accepted.effective_config
            self.settings = Settings(
                c.model,
                c.chunk_seconds,
                c.overlap_seconds,
                c.seed,
                c.solver_steps,
                response.accepted.model_sample_rate_hertz,
                c.candidates or 1,
                c.predict_spans,
                c.span_gate,
            )
        elif kind == "stem_block":
            b = response.stem_block
            if b.start_frame != self.frames:
                raise self._fault(f"a stem block starts at frame {b.start_frame}, expected {self.frames}")
            targets = tuple(self._decode(t, b.frame_count) for t in b.prompt_target_audio)
            block = SeparatedBlock(
                int(b.start_frame),
                targets[0] if targets else self._decode(b.target_audio, b.frame_count),
                self._decode(b.residual_audio, b.frame_count),
                targets,
            )
            self.frames += b.frame_count
            return self.on_block(block)
        elif kind == "progress":
            p = response.progress
            step = (int(p.model_evaluations_done), int(p.model_evaluations_planned))
            if self.on_step is not None and step != self._step and step[1]:
                self._step = step
                returned = self.on_step(*step)
                if inspect.isawaitable(returned):  # an async callback: awaited before on_progress's
                    return _both(returned, self.on_progress, int(p.frames_done), int(p.frames_known))
            if self.on_progress is not None:
                return self.on_progress(int(p.frames_done), int(p.frames_known))
        elif kind == "summary":
            self.summary = response.summary
        return None

    def result(self, frames_sent: int) -> Summary:
        if self.summary is None or self.settings is None:
            raise self._fault("the stream ended without a summary")
        if self.frames != frames_sent:
            raise self._fault(f"stems of {self.frames} frames came back for {frames_sent} frames sent")
        s = self.summary
        return Summary(
            self.settings,
            int(s.frames_in),
            int(s.frames_out),
            int(s.windows),
            int(s.model_evaluations),
            float(s.elapsed_seconds),
            int(s.candidates_evaluated),
            tuple(float(x) for x in s.chosen_scores),
            int(s.windows_gated),
        )


async def _both(first: Any, then: ProgressFn | None, *args: int) -> None:
    await first
    if then is not None:
        returned = then(*args)
        if inspect.isawaitable(returned):
            await returned


def _as_frames(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]  # (frames, 1)
    if audio.ndim != 2 or audio.shape[1] < 1:
        raise ClientError(f"audio of shape {audio.shape}: expected (frames, channels) or (frames,)")
    return audio


def _array_blocks(audio: np.ndarray, block_frames: int) -> Iterator[np.ndarray]:
    for i in range(0, len(audio), block_frames):
        yield audio[i : i + block_frames]


class _Job:
    """One separation call: its config, its audio as blocks (made afresh for each try), where its stem blocks go.

    Without an `on_block` of the caller's the blocks are kept and `stems` joins them.
    """

    def __init__(
        self,
        config: pb.SeparationConfig,
        make_blocks: Callable[[], Iterable[np.ndarray]],
        on_block: BlockFn | None = None,
        flat: bool = False,
    ) -> None:
        self.config = config
        self.make_blocks = make_blocks
        self.flat = flat  # a 1-D input: 1-D stems
        self.blocks: list[SeparatedBlock] = []
        self.on_block: BlockFn = on_block if on_block is not None else self.blocks.append

    def attempt(
        self, target: str, on_progress: ProgressFn | None, on_step: StepFn | None
    ) -> tuple[_Outgoing, _Incoming]:
        """The two sides of one try of the call."""
        outgoing = _Outgoing(self.config, self.make_blocks())
        return outgoing, _Incoming(self.config.channel_count, target, self.on_block, on_progress, on_step)

    def stems(self, summary: Summary) -> Stems:
        channels = self.config.channel_count

        def join(stems: list[np.ndarray]) -> np.ndarray:
            out = np.concatenate(stems) if stems else np.zeros((0, channels), np.float32)
            return out[:, 0] if self.flat else out

        blocks = self.blocks
        names = _names([p.description for p in self.config.prompts])
        targets = {name: join([b.targets[i] for b in blocks]) for i, name in enumerate(names)}
        target = next(iter(targets.values())) if targets else join([b.target for b in blocks])
        return Stems(target, join([b.residual for b in blocks]), summary, targets)


def _info(response: pb.GetInfoResponse, health: str, target: str) -> ServerInfo:
    return ServerInfo(
        target=target,
        health=health,
        version=response.server_version,
        models=[
            ModelInfo(
                m.name,
                m.selected_by_default,
                m.sample_rate_hertz,
                m.default_chunk_seconds,
                m.default_overlap_seconds,
                m.default_solver_steps,
                m.masked_video_supported,
                m.text_ranker,
                m.visual_ranker,
                m.span_predictor,
            )
            for m in response.models
        ],
        sample_formats=[pb.SampleFormat.Name(f) for f in response.sample_formats],
        limits={f.name: getattr(response.limits, f.name) for f in response.limits.DESCRIPTOR.fields},
        authentication_required=response.authentication_required,
    )


def _health(raw: bytes) -> str:
    # grpc.health.v1.HealthCheckResponse is one enum field (number 1, varint), decoded by hand so that the
    # thin install needs no grpcio-health-checking.
    status = raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0
    return _HEALTH_STATUS.get(status, f"STATUS_{status}")


def _no_health(err: grpc.RpcError) -> str:
    """A server without the health service answers its check UNIMPLEMENTED: say so; any other failure goes on."""
    if err.code() != grpc.StatusCode.UNIMPLEMENTED:
        raise err
    return "NO_HEALTH_SERVICE"


def with_default_port(target: str) -> str:
    """`host` -> `host:50051` (IPv6 `::1` or `[::1]` -> `[::1]:50051`); a target with a port or a gRPC scheme
    (`unix:`, `dns:///`, ...) stays as it is. Without this gRPC dials `host:443`, the HTTPS port."""
    if target.startswith("["):
        return target if "]:" in target else f"{target}:{DEFAULT_PORT}"
    if target.count(":") > 1 and "/" not in target and not target.startswith(("unix", "ipv4:", "ipv6:")):
        return f"[{target}]:{DEFAULT_PORT}"  # a bare IPv6 address
    if ":" in target:
        return target  # host:port, or a scheme
    return f"{target}:{DEFAULT_PORT}"


def _retryable(err: grpc.RpcError, started: bool) -> bool:
    """Retry only what a retry can fix: a connection refused before the stream started (a server starting or
    restarting). A draining server (UNAVAILABLE with its own message), a TLS mismatch or an unknown host would
    answer the same again."""
    return not started and connection_failure(err.code(), err.details() or "") == "refused"


# --------------------------------------------------------------------------------------------------------------
# Clients


class _Base:
    """What both clients share: the connection settings, the checks and messages of a call (`_Job`) and the retry
    policy; `Client` and `AsyncClient` differ only in how they call the stub (blocking or awaited).

    `retries` more tries with delays `backoff_seconds * 2**n` while a call has not started; the audio goes out in
    messages of `block_seconds`.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        *,
        retries: int = 3,
        backoff_seconds: float = 0.25,
        block_seconds: float = 0.25,
    ) -> None:
        target = with_default_port(target)
        self.target = target
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.block_seconds = block_seconds
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        credentials = None
        if tls or ca_file is not None:
            root = Path(ca_file).read_bytes() if ca_file is not None else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
        self._channel = self._open(target, credentials)
        self._stub = pb_grpc.SeparationServiceStub(self._channel)

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None) -> Any:
        raise NotImplementedError

    def _delay(self, attempt: int) -> float:
        return self.backoff_seconds * 2**attempt

    def _block_frames(self, sample_rate: int) -> int:
        return max(1, round(self.block_seconds * sample_rate))

    def _array_job(
        self,
        audio: np.ndarray,
        sample_rate: int,
        description: str | Sequence[str],
        spans: Iterable[SpanLike],
        video: Video | None,
        options: SeparationOptions,
    ) -> _Job:
        frames = _as_frames(audio)  # (frames, channels)
        if sample_rate <= 0:
            raise ClientError(f"sample_rate {sample_rate} must be a rate in hertz > 0")
        spans = to_region([as_span(s) for s in spans], 0.0, len(frames) / sample_rate)
        config = _config(description, spans, sample_rate, frames.shape[1], options, video, len(frames))
        block_frames = self._block_frames(sample_rate)
        return _Job(config, lambda: _array_blocks(frames, block_frames), flat=np.ndim(audio) == 1)

    def _file_job(
        self,
        path: str | Path,
        description: str | Sequence[str],
        spans: Iterable[SpanLike],
        start: float | None,
        duration: float | None,
        on_block: BlockFn | None,
        video: Video | None,
        options: SeparationOptions,
    ) -> _Job:
        region = Region.of(path, start, duration)
        spans = to_region([as_span(s) for s in spans], region.start_seconds, region.seconds)
        config = _config(description, spans, region.sample_rate, region.channels, options, video, region.frames)
        block_frames = self._block_frames(region.sample_rate)
        return _Job(config, lambda: read_blocks(region, block_frames), on_block)

    def _retry_delay(
        self, err: grpc.RpcError, attempt: int, started: bool = False, outgoing: _Outgoing | None = None
    ) -> float:
        """Seconds to wait before trying a failed call again. Raises instead what the caller should see: the
        request side's own error (an unreadable file, say), or a `CallError` once a retry cannot help or none
        is left."""
        if outgoing is not None and outgoing.error is not None:
            raise outgoing.error from None
        if not _retryable(err, started) or attempt == self.retries:
            raise CallError.from_rpc(err, self.target, attempt + 1) from None
        delay = self._delay(attempt)
        log.info("%s unavailable (%s); retrying in %.2f s", self.target, err.details(), delay)
        return delay


class Client(_Base):
    """A blocking client. `target` is `host:port`; `token` goes out as `authorization: Bearer <token>`;
    `tls=True` (or a `ca_file` of PEM roots for a self-signed server) opens a TLS channel."""

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        if credentials is not None:
            return grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        on_progress: ProgressFn | None = None,
        *,
        on_step: StepFn | None = None,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Stems:
        """Separate `audio` `(frames, channels)` (or `(frames,)`) at `sample_rate` Hz; stems of the same shape.

        `video` is a visual prompt starting with the audio (`description` may then be empty)."""
        job = self._array_job(audio, sample_rate, description, spans, video, options)
        return job.stems(self._run(job, on_progress, on_step))

    @overload
    def separate_file(
        self,
        path: str | Path,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        *,
        start: float | None = None,
        duration: float | None = None,
        on_progress: ProgressFn | None = None,
        on_step: StepFn | None = None,
        on_block: None = None,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Stems: ...
    @overload
    def separate_file(
        self,
        path: str | Path,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        *,
        start: float | None = None,
        duration: float | None = None,
        on_progress: ProgressFn | None = None,
        on_step: StepFn | None = None,
        on_block: BlockFn,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Summary: ...

    def separate_file(
        self,
        path: str | Path,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        *,
        start: float | None = None,
        duration: float | None = None,
        on_progress: ProgressFn | None = None,
        on_step: StepFn | None = None,
        on_block: BlockFn | None = None,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Stems | Summary:
        """Separate `[start, start + duration)` seconds of the file at `path` (default: all of it).

        The file is read from disk block by block as the stream sends. Spans are on the file's timeline.
        Without `on_block` the stems are gathered and returned as `Stems`; with it each `SeparatedBlock` goes to
        `on_block` as it arrives (write it out: memory stays flat) and the `Summary` is returned.
        A `video` prompt starts at the region's start (`start`), not at the file's; `description` may then be empty.
        """
        job = self._file_job(path, description, spans, start, duration, on_block, video, options)
        summary = self._run(job, on_progress, on_step)
        return summary if on_block is not None else job.stems(summary)

    def info(self) -> ServerInfo:
        """The server's health, models, sample formats and limits."""
        check = self._channel.unary_unary(_HEALTH_CHECK)  # raw bytes both ways
        for attempt in range(self.retries + 1):
            try:
                try:
                    health = _health(check(b"", metadata=self._metadata))
                except grpc.RpcError as err:
                    health = _no_health(err)
                return _info(self._stub.GetInfo(pb.GetInfoRequest(), metadata=self._metadata), health, self.target)
            except grpc.RpcError as err:
                time.sleep(self._retry_delay(err, attempt))
        raise AssertionError("unreachable")

    def _run(self, job: _Job, on_progress: ProgressFn | None, on_step: StepFn | None) -> Summary:
        for attempt in range(self.retries + 1):
            outgoing, incoming = job.attempt(self.target, on_progress, on_step)
            call = self._stub.Separate(iter(outgoing), metadata=self._metadata)
            try:
                for response in call:
                    incoming.feed(response)
                return incoming.result(outgoing.frames)
            except grpc.RpcError as err:
                time.sleep(self._retry_delay(err, attempt, incoming.started, outgoing))
            except BaseException:
                call.cancel()  # a failing callback or Ctrl-C: the server stops the stream's work
                raise
        raise AssertionError("unreachable")


class AsyncClient(_Base):
    """`Client` on `grpc.aio`: the same verbs, awaited. Make it inside the event loop that uses it.
    `on_block` and `on_progress` may be plain functions or coroutine functions."""

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        if credentials is not None:
            return grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        on_progress: ProgressFn | None = None,
        *,
        on_step: StepFn | None = None,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Stems:
        job = self._array_job(audio, sample_rate, description, spans, video, options)
        return job.stems(await self._run(job, on_progress, on_step))

    async def separate_file(
        self,
        path: str | Path,
        description: str | Sequence[str],
        spans: Iterable[SpanLike] = (),
        *,
        start: float | None = None,
        duration: float | None = None,
        on_progress: ProgressFn | None = None,
        on_step: StepFn | None = None,
        on_block: BlockFn | None = None,
        video: Video | None = None,
        **options: Unpack[SeparationOptions],
    ) -> Stems | Summary:
        """As `Client.separate_file`; the file is read in a worker thread so the event loop never waits on disk."""
        job = self._file_job(path, description, spans, start, duration, on_block, video, options)
        summary = await self._run(job, on_progress, on_step)
        return summary if on_block is not None else job.stems(summary)

    async def info(self) -> ServerInfo:
        check = self._channel.unary_unary(_HEALTH_CHECK)
        for attempt in range(self.retries + 1):
            try:
                try:
                    health = _health(await check(b"", metadata=self._metadata))
                except grpc.RpcError as err:
                    health = _no_health(err)
                response = await self._stub.GetInfo(pb.GetInfoRequest(), metadata=self._metadata)
                return _info(response, health, self.target)
            except grpc.RpcError as err:
                await asyncio.sleep(self._retry_delay(err, attempt))
        raise AssertionError("unreachable")

    async def _run(self, job: _Job, on_progress: ProgressFn | None, on_step: StepFn | None) -> Summary:
        for attempt in range(self.retries + 1):
            outgoing, incoming = job.attempt(self.target, on_progress, on_step)
            call = self._stub.Separate(outgoing.aiter(), metadata=self._metadata)
            try:
                async for response in call:
                    returned = incoming.feed(response)
                    if inspect.isawaitable(returned):
                        await returned
                return incoming.result(outgoing.frames)
            except grpc.RpcError as err:
                await asyncio.sleep(self._retry_delay(err, attempt, incoming.started, outgoing))
            except BaseException:
                call.cancel()
                raise
        raise AssertionError("unreachable")
