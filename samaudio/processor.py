"""The processor: descriptions, audio and span prompts (anchors) -> a padded `Batch` for `SAMAudio.separate`.

It reproduces the official `SAMAudioProcessor` tensor for tensor (the golden `batch_*` files), with one
difference: bad input raises a named error from `samaudio.errors` (with the numbers and the fix) where the
official code asserts, crashes later in the codec, or silently does something else.

Legend:
    B     items (descriptions, audios)
    L     samples of one item at 48 kHz; Lmax = the longest
    T     latent frames = max(sizes) = ceil(Lmax / hop)
    A     anchor slots = 2 + the most anchors of any item
    N     video frames (as given or decoded); F frames of one item after selection = its latent frames

Masked videos (visual prompting) are (N, 3, H, W) uint8 RGB tensors or video files, decoded with PyAV (the
`av` package, part of the `[server]` extra) where the official processor uses torchcodec. One frame is picked
per latent frame (40 ms): for a file, the frame whose presentation time is nearest to the latent frame's time
(the earlier frame on ties); for a tensor, N frames assumed to span the item evenly. Files decode completely
into memory: pass `max_bytes` to `decode_video` to bound what an untrusted file may take. A stream's masked
video is a `VideoPrompt` (frames on the stream's clock), whose windows take frames by the same nearest-time rule.
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from samaudio.errors import (
    ConfigError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    InvalidVideoError,
    VideoTooLargeError,
)
from samaudio.model.config import SAMAudioConfig
from samaudio.model.hub import CONFIG_NAME, resolve_folder

logger = logging.getLogger(__name__)

__all__ = [
    "SAMAudioProcessor",
    "Batch",
    "Anchor",
    "FrameAnchor",
    "anchor_frame",
    "DecodedVideo",
    "VideoPrompt",
    "decode_video",
    "nearest_frames",
    "latent_times",
]

Anchor = tuple[str, float, float]  # (sign, start_seconds, end_seconds); sign "+" present, "-" absent
FrameAnchor = tuple[str, int, int]  # (sign, start_frame, end_frame): latent frames [start, end)
AudioInput = torch.Tensor | str | os.PathLike
VideoInput = torch.Tensor | str | os.PathLike  # (N, 3, H, W) uint8 frames, or a video file

# Anchor id table of the official model (an Embedding of num_anchors + 1 rows, padding_idx = <pad>).
ANCHOR_IDS = {"<null>": 0, "+": 1, "-": 2, "<pad>": 3}
NULL_SLOT, PAD_SLOT = 0, 1  # every item's ids start [<null>, <pad>]: alignment 0 = no prompt, 1 = padded frame
USER_SIGNS = ("+", "-")
# Two presentation times this close are equally near a latent frame's time; the earlier frame wins, as the
# official argmin's "first index on ties" (float rounding of pts * time_base must not decide a tie).
TIE_SECONDS = 1e-9
FALLBACK_FRAME_SECONDS = 0.04  # duration of a file's last frame when the file states no rate or duration


def min_audio_samples(hop_length: int) -> int:
    """Fewest samples the codec accepts: it reflect-pads to a multiple of hop, and reflection needs pad < L.

    For L < hop the pad is hop - L, so L > hop / 2; any L >= hop works.
    """
    return hop_length // 2 + 1


def mask_from_sizes(sizes: torch.Tensor) -> torch.Tensor:
    """(B,) frame counts -> (B, T) bool, True on valid frames, T = max(sizes)."""
    T = int(sizes.max().item())
    return torch.arange(T, device=sizes.device) < sizes[:, None]  # (B, T)


def _load_audio_file(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read a file with soundfile -> (channels, L) float32 at `sample_rate` (resampled with torchaudio's defaults)."""
    import soundfile as sf

    try:
        data, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)  # (L, channels)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or OSError depending on the cause
        raise InvalidAudioError(
            f"cannot read audio file {os.fspath(path)!r}: {e}. Fix: give a WAV, FLAC or OGG file soundfile can "
            "decode, or decode it yourself and pass a (channels, samples) float tensor at "
            f"{sample_rate} Hz"
        ) from e
    wav = torch.from_numpy(data.T.copy())  # (channels, L)
    if rate != sample_rate:
        import torchaudio.functional as AF

        if wav.shape[-1] == 0:
            raise InvalidAudioError(f"audio file {os.fspath(path)!r} holds no samples: give a non-empty file")
        # As the official processor: resample every channel first, then average them.
        wav = AF.resample(wav, rate, sample_rate)
    return wav


def _check_audio(wav: torch.Tensor, where: str, hop_length: int, sample_rate: int) -> None:
    if wav.dim() != 2:
        raise InvalidAudioError(
            f"{where} has shape {tuple(wav.shape)} ({wav.dim()}-D) but must be 2-D (channels, samples) at "
            f"{sample_rate} Hz: use wav[None] for a mono 1-D tensor"
        )
    C, L = wav.shape
    if not wav.is_floating_point():
        raise InvalidAudioError(
            f"{where} has dtype {wav.dtype} but must be floating point in [-1, 1]: "
            "convert it, e.g. wav.float() / 32768 for int16 samples"
        )
    if C == 0 or L == 0:
        raise InvalidAudioError(f"{where} is empty (shape {tuple(wav.shape)}): give at least one channel of samples")
    need = min_audio_samples(hop_length)
    if L < need:
        raise InvalidAudioError(
            f"{where} has {L} samples but the codec needs at least {need} ({need / sample_rate * 1000:.1f} ms at "
            f"{sample_rate} Hz; its reflect padding to a multiple of {hop_length} needs more than half a hop)"
            + (
                "; it looks like (samples, channels): transpose it with wav.T"
                if C > L
                else "; pad it with silence or give longer audio"
            )
        )
    if not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise InvalidAudioError(
            f"{where} has {bad} non-finite sample(s) (NaN or inf): replace them (e.g. with 0) and try again"
        )


def anchor_frame(seconds: float, sample_rate: int, hop_length: int) -> int:
    """The latent frame an anchor edge at `seconds` falls on: ceil(t * sr / hop), Python floats, multiply first
    (the official rule; the one place it is written)."""
    return math.ceil(seconds * sample_rate / hop_length)


MAX_ANCHOR_SECONDS = 1e7  # ~116 days, far past any audio; keeps frame numbers exact in float64 (issue 19)


def _check_anchor(anchor: Any, where: str) -> tuple[str, float, float]:
    if isinstance(anchor, (str, bytes)) or not isinstance(anchor, Sequence) or len(anchor) != 3:
        raise InvalidAnchorError(f"{where} is {anchor!r}; an anchor is a (sign, start_seconds, end_seconds) triple")
    sign, start, end = anchor
    if sign not in USER_SIGNS:
        raise InvalidAnchorError(
            f"{where} has sign {sign!r}: use '+' (the target sound is present) or '-' (it is absent)"
        )
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError) as e:
        raise InvalidAnchorError(f"{where} has non-numeric times {anchor[1]!r}, {anchor[2]!r}: give seconds") from e
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InvalidAnchorError(f"{where} has non-finite times {start}, {end}: give seconds")
    if max(start, end) > MAX_ANCHOR_SECONDS:  # before any arithmetic: 1e308 s overflows when turned into frames
        raise InvalidAnchorError(
            f"{where} ends at {max(start, end):g} s, past {MAX_ANCHOR_SECONDS:g} s: give times within the audio"
        )
    if start < 0 or end < 0:
        raise InvalidAnchorError(f"{where} has a negative time ({start} s to {end} s): times count from 0 s")
    if start >= end:
        raise InvalidAnchorError(f"{where} starts at {start} s, not before its end {end} s: give start < end")
    return sign, start, end


# ----------------------------------------------------------------------------------------------------------
# Video files and frame selection


@dataclass
class DecodedVideo:
    """A decoded video file: its frames in presentation order, their times, and where the video ends."""

    frames: torch.Tensor  # (N, 3, H, W) uint8 RGB
    times: torch.Tensor  # (N,) float64 presentation times in seconds, non-decreasing
    end_seconds: float  # the last frame's time plus its duration


def decode_video(source: str | os.PathLike | bytes, *, max_bytes: int | None = None) -> DecodedVideo:
    """Decode every frame of the first video stream of a file (a path, or its bytes) with PyAV, as RGB.

    Frames keep the size of the first one (a stream that changes size is scaled to it). `max_bytes` bounds the
    decoded frames (N * H * W * 3): decoding stops with `VideoTooLargeError` once they would exceed it.
    Raises `InvalidVideoError` for a file that is missing, not a video, or has no frames.
    """
    try:
        import av
    except ImportError as e:  # the thin client has no PyAV; the [server] extra brings it
        raise ImportError("decoding video files needs PyAV: pip install av (part of samaudio[server])") from e

    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    where = f"the video file ({len(source)} bytes)" if in_memory else f"video file {os.fspath(source)!r}"
    frames: list[torch.Tensor] = []
    times: list[float] = []
    last_duration = None
    try:
        with av.open(io.BytesIO(bytes(source)) if in_memory else os.fspath(source), "r") as container:
            if not container.streams.video:
                raise InvalidVideoError(f"{where} holds no video stream: give a video file (e.g. MP4, MKV, WebM)")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            step = float(1 / rate) if rate else FALLBACK_FRAME_SECONDS  # seconds per frame, where pts are missing
            size = None
            for frame in container.decode(stream):
                if size is None:
                    size = (frame.height, frame.width)
                H, W = size
                if max_bytes is not None and (len(frames) + 1) * H * W * 3 > max_bytes:
                    raise VideoTooLargeError(
                        f"{where} decodes to more than {max_bytes} bytes of frames ({len(frames) + 1} frames of "
                        f"{W}x{H} RGB so far): send a shorter or smaller video"
                    )
                rgb = frame.to_ndarray(format="rgb24", width=W, height=H)  # (H, W, 3)
                frames.append(torch.from_numpy(rgb).permute(2, 0, 1))  # (3, H, W)
                times.append(float(frame.time) if frame.time is not None else len(times) * step)
                last_duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else step
    except av.FFmpegError as e:  # FFmpeg's errors: missing file, not a video, corrupt data
        raise InvalidVideoError(
            f"cannot decode {where}: {e}. Fix: give a video file FFmpeg reads (MP4, MKV, WebM, ...) or decoded "
            "frames as a (frames, 3, height, width) uint8 tensor"
        ) from e
    if not frames:
        raise InvalidVideoError(f"{where} has a video stream but no frames: give a video with at least one frame")
    order = sorted(range(len(times)), key=times.__getitem__)  # presentation order (stable on equal times)
    video = torch.stack([frames[i] for i in order])  # (N, 3, H, W)
    t = torch.tensor([times[i] for i in order], dtype=torch.float64)  # (N,)
    return DecodedVideo(frames=video, times=t, end_seconds=float(t[-1]) + last_duration)


def nearest_frames(times: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """For each target time, the index of the frame whose time is nearest (the first such frame on ties).

    times: (N,) non-decreasing seconds, N >= 1; targets: (K,) seconds -> (K,) int64. The official argmin of
    |t - pts| over all frames, computed by bisection so that long videos need no (K, N) matrix.
    """
    times, targets = times.double(), targets.double()
    N = times.shape[0]
    right = torch.searchsorted(times, targets, side="left").clamp(max=N - 1)  # (K,) first frame at or after t
    left = (right - 1).clamp(min=0)
    earlier = (targets - times[left]) <= (times[right] - targets) + TIE_SECONDS
    idx = torch.where(earlier, left, right)
    return torch.searchsorted(times, times[idx], side="left")  # the first of frames with equal times


def latent_times(frames: int, hop_length: int, sample_rate: int, first: int = 0) -> torch.Tensor:
    """Times in seconds of latent frames [first, first + frames): k * hop / sr, (frames,) float64."""
    return torch.arange(first, first + frames, dtype=torch.float64) * hop_length / sample_rate


@dataclass(frozen=True)
class VideoPrompt:
    """A stream's masked video: frames with the sounding object masked, and when each is shown.

    Times are seconds on the stream's clock (0 = its first frame of audio). Build one with `from_frames`
    (frames at a constant rate) or `from_file` (a decoded file's presentation times, as stored).
    """

    frames: torch.Tensor  # (N, 3, Hv, Wv) uint8 RGB, the object already masked
    times: torch.Tensor  # (N,) float64 seconds each frame is shown from, non-decreasing
    end_seconds: float  # where the video ends: latent frames from here on get no frame (zero features)

    def __post_init__(self):
        v = self.frames
        if not isinstance(v, torch.Tensor) or v.dim() != 4 or v.shape[1] != 3 or 0 in v.shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InvalidVideoError(f"video frames are {shape} but must be (frames, 3, height, width) RGB, none empty")
        if v.dtype != torch.uint8:
            raise InvalidVideoError(
                f"video frames have dtype {v.dtype} but must be uint8 RGB 0..255: convert them, e.g. "
                "(x * 255).round().clamp(0, 255).to(torch.uint8) for floats in [0, 1]"
            )
        t = self.times
        if not isinstance(t, torch.Tensor) or t.shape != (v.shape[0],):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InvalidVideoError(f"{v.shape[0]} video frames but times of shape {shape}: give one time per frame")
        if not bool(torch.isfinite(t).all()) or bool((t[1:] < t[:-1]).any()):
            raise InvalidVideoError("video frame times must be finite seconds in presentation (non-decreasing) order")
        if not math.isfinite(self.end_seconds) or self.end_seconds <= float(t[-1]):
            raise InvalidVideoError(
                f"the video ends at {self.end_seconds} s, not after its last frame at {float(t[-1])} s: give the "
                "last frame's time plus its duration"
            )

    @classmethod
    def from_frames(
        cls, frames: torch.Tensor, frames_per_second: float, masks: torch.Tensor | None = None
    ) -> VideoPrompt:
        """Frames shown at a constant rate from 0 s: frame i at i / fps, the video ending at N / fps.

        `masks` ((N, Hv, Wv) or (N, 1, Hv, Wv), non-zero on the object) black the object out, as
        `SAMAudioProcessor.mask_videos` does; without them the frames are taken as masked already.
        """
        fps = frames_per_second
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
            raise InvalidVideoError(f"frames_per_second is {fps!r}: give the video's frame rate, a positive number")
        n = frames.shape[0] if isinstance(frames, torch.Tensor) and frames.dim() else 0
        times = torch.arange(n, dtype=torch.float64) / float(fps)  # (N,)
        video = cls(frames=frames, times=times, end_seconds=n / float(fps))
        return video if masks is None else video.with_masks(masks)

    @classmethod
    def from_file(
        cls, source: str | os.PathLike | bytes, masks: torch.Tensor | None = None, *, max_bytes: int | None = None
    ) -> VideoPrompt:
        """A video file (a path or its bytes), decoded whole with PyAV; `masks` as in `from_frames`, one per
        decoded frame. `max_bytes` bounds the decoded frames (`VideoTooLargeError` beyond)."""
        decoded = decode_video(source, max_bytes=max_bytes)
        video = cls(frames=decoded.frames, times=decoded.times, end_seconds=decoded.end_seconds)
        return video if masks is None else video.with_masks(masks)

    def with_masks(self, masks: torch.Tensor) -> VideoPrompt:
        """The same video with the object blacked out: `frames * (masks == 0)`, masks (N, Hv, Wv) or
        (N, 1, Hv, Wv), non-zero on the object (the rule of `SAMAudioProcessor.mask_videos`)."""
        if not isinstance(masks, torch.Tensor):
            raise InvalidVideoError(f"masks is a {type(masks).__name__}: give a (frames, height, width) tensor")
        m = masks.unsqueeze(1) if masks.dim() == 3 else masks  # (N, 1, Hv, Wv)
        N, _, Hv, Wv = self.frames.shape
        if m.dim() != 4 or tuple(m.shape) != (N, 1, Hv, Wv):
            raise InvalidVideoError(
                f"masks of shape {tuple(masks.shape)} do not fit video frames of shape {tuple(self.frames.shape)}: "
                "give one (height, width) mask per frame, (frames, height, width)"
            )
        return replace(self, frames=self.frames * (m == 0))  # (N, 3, Hv, Wv), the object blacked out

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.frames.shape[2], self.frames.shape[3]

    @property
    def frames_per_second(self) -> float:
        """Average rate: frames over the time from the first frame to the end."""
        return self.frames.shape[0] / (self.end_seconds - float(self.times[0]))

    def window(self, first_frame: int, frames: int, hop: int, sample_rate: int) -> torch.Tensor:
        """The frames of latent frames [first_frame, first_frame + frames): (F, 3, Hv, Wv), F <= frames.

        Latent frame f gets the frame shown nearest to f * hop / sample_rate; frames from the video's end on get
        none (so F < frames in the window where the video ends, 0 after it).
        """
        t = latent_times(frames, hop, sample_rate, first_frame)  # (frames,)
        shown = int((t < self.end_seconds - TIE_SECONDS).sum())  # a prefix: times increase
        idx = nearest_frames(self.times, t[:shown])  # (F,)
        if shown and bool((idx == torch.arange(int(idx[0]), int(idx[0]) + shown)).all()):
            return self.frames[int(idx[0]) : int(idx[0]) + shown]  # a view: one frame per latent frame (25 fps)
        return self.frames[idx]  # (F, 3, Hv, Wv)


@dataclass
class Batch:
    """The model's input. Construct positionally as the official `Batch`; anchors are processed on creation."""

    audios: torch.Tensor  # (B, 1, Lmax) float, zero-padded mono, on the inputs' device
    sizes: torch.Tensor  # (B,) float32 whole numbers: valid latent frames, ceil(wav_sizes / hop)
    wav_sizes: torch.Tensor  # (B,) int64: true sample counts
    descriptions: list[str]
    hop_length: int
    audio_sampling_rate: int
    anchors: list[list[Anchor]] | None = None  # as given; None lets separate() predict spans
    audio_pad_mask: torch.Tensor | None = None  # (B, T) bool, True on valid frames
    masked_video: list[torch.Tensor] | None = None  # B tensors (sizes_i, 3, H, W)
    anchor_ids: torch.Tensor = field(init=False)  # (B, A) int64: [<null>, <pad>, sign ids...] padded with <pad>
    anchor_alignment: torch.Tensor = field(init=False)  # (B, T) int64: slot of anchor_ids per frame

    def __post_init__(self):
        if self.audio_pad_mask is None:
            self.audio_pad_mask = mask_from_sizes(self.sizes)
        if self.audios.size(0) != len(self.descriptions):
            raise InvalidRequestError(
                f"{self.audios.size(0)} audios but {len(self.descriptions)} descriptions: "
                "give one description per audio"
            )
        self.process_anchors(self.anchors)

    def process_anchors(self, anchors: list[list[Anchor]] | None, warn_empty: bool = True) -> None:
        """Set `anchor_ids` (B, A) and `anchor_alignment` (B, T) from per-item (sign, start, end) lists.

        Frame of a time t is ceil(t * sr / hop) (Python floats); anchor k marks frames [start, end) with slot
        2 + k, later anchors overwriting earlier ones and the <pad> slot of padded frames. `warn_empty=False`
        quietens the warning for an anchor that covers no frame (predicted spans make such anchors by design).
        """
        if anchors is None:
            self.set_anchor_frames(None)
            return
        if isinstance(anchors, (str, bytes)) or not isinstance(anchors, Sequence):
            raise InvalidAnchorError(
                f"anchors must be a list with one list of (sign, start, end) per item, got {type(anchors).__name__}"
            )
        B = self.audio_pad_mask.shape[0]
        if len(anchors) != B:
            raise InvalidRequestError(
                f"{len(anchors)} anchor lists for {B} audios: give one list per item ([] for none), or None"
            )
        rows = []
        for i, item in enumerate(anchors):
            if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
                raise InvalidAnchorError(
                    f"anchors[{i}] is {item!r}; each item needs a list of (sign, start, end) triples ([] for none)"
                )
            row = []
            for k, anchor in enumerate(item):
                sign, start, end = _check_anchor(anchor, f"anchors[{i}][{k}]")
                s = anchor_frame(start, self.audio_sampling_rate, self.hop_length)
                e = anchor_frame(end, self.audio_sampling_rate, self.hop_length)
                frames = int(self.sizes[i])
                if s >= min(e, frames):
                    where = f"anchors[{i}][{k}] ({sign}, {start} s, {end} s)"
                    log = logger.warning if warn_empty else logger.debug
                    log("%s covers no frame of the item's %d frames", where, frames)
                row.append((sign, s, e))
            rows.append(row)
        self.set_anchor_frames(rows)

    def set_anchor_frames(self, anchors: Sequence[Sequence[FrameAnchor]] | None) -> None:
        """Set `anchor_ids` (B, A) and `anchor_alignment` (B, T) from per-item (sign, start, end) latent frames.

        Anchor k marks frames [start, end) with slot 2 + k, later anchors overwriting earlier ones and the <pad>
        slot of padded frames. For callers that hold anchors in frames already (the streaming engine's windows),
        so that they take no round trip through seconds; `anchors` stays as given (None for none given in seconds).
        """
        mask = self.audio_pad_mask
        B, T = mask.shape
        alignment = torch.full((B, T), NULL_SLOT, dtype=torch.long, device=mask.device)  # (B, T)
        alignment[~mask] = PAD_SLOT
        if anchors is None:
            ids = torch.tensor([[ANCHOR_IDS["<null>"], ANCHOR_IDS["<pad>"]]] * B, dtype=torch.long)  # (B, 2)
        else:
            rows = []
            for i, item in enumerate(anchors):
                row = [ANCHOR_IDS["<null>"], ANCHOR_IDS["<pad>"]]
                for sign, s, e in item:
                    alignment[i, s:e] = len(row)
                    row.append(ANCHOR_IDS[sign])
                rows.append(row)
            A = max(len(r) for r in rows)
            ids = torch.tensor([r + [ANCHOR_IDS["<pad>"]] * (A - len(r)) for r in rows], dtype=torch.long)  # (B, A)
        self.anchor_ids = ids.to(self.audios.device)
        self.anchor_alignment = alignment.to(self.audios.device)

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to `device`, in place; returns self."""
        self.audios = self.audios.to(device)
        self.anchor_ids = self.anchor_ids.to(device)
        self.anchor_alignment = self.anchor_alignment.to(device)
        self.sizes = self.sizes.to(device)
        self.wav_sizes = self.wav_sizes.to(device)
        if self.audio_pad_mask is not None:
            self.audio_pad_mask = self.audio_pad_mask.to(device)
        if self.masked_video is not None:
            self.masked_video = [v.to(device) for v in self.masked_video]
        return self


class SAMAudioProcessor:
    """Turns (descriptions, audios, anchors, masked videos) into a `Batch`. Holds no weights."""

    config_cls = SAMAudioConfig

    def __init__(self, audio_hop_length: int = 1920, audio_sampling_rate: int = 48000):
        self.audio_hop_length = audio_hop_length
        self.audio_sampling_rate = audio_sampling_rate

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> SAMAudioProcessor:
        """Read only `config.json` of a model folder or hub repo and keep the codec's hop and sample rate.

        Raises `ModelUnavailableError` when the repo cannot be had (offline, gated, missing).
        """
        path = resolve_folder(name_or_path, config_only=True) / CONFIG_NAME
        try:
            fields = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from e
        config = cls.config_cls.from_dict(fields)
        return cls(config.audio_codec.hop_length, config.audio_codec.sample_rate)

    def wav_to_feature_idx(self, wav_idx: torch.Tensor | int | float) -> torch.Tensor | int:
        """Samples -> latent frames, ceil(w / hop) (a float tensor for tensors, as the official)."""
        if isinstance(wav_idx, torch.Tensor):
            return torch.ceil(wav_idx / self.audio_hop_length)
        return math.ceil(wav_idx / self.audio_hop_length)

    def feature_to_wav_idx(self, feature_idx: torch.Tensor | int | float) -> torch.Tensor | int | float:
        """Latent frames -> samples, f * hop."""
        return feature_idx * self.audio_hop_length

    def mask_videos(self, videos: list[VideoInput], masks: list[VideoInput]) -> list[torch.Tensor]:
        """Black out the masked object: `video * (mask == 0)` per pair, the mask broadcasting over channels.

        Videos and masks are tensors ((N, 3, H, W) uint8 and e.g. (N, 1, H, W) bool) or files, decoded whole
        (a mask file as RGB frames, every channel compared with 0). As the official processor: pixels where the
        mask is non-zero become 0, so a segmenter's object mask blacks the object out and keeps its context.
        """
        if len(videos) != len(masks):
            raise InvalidRequestError(f"{len(videos)} videos but {len(masks)} masks: give one mask per video")
        out = []
        for i, (video, mask) in enumerate(zip(videos, masks)):
            video = self._video_tensor(video, f"videos[{i}]")
            mask = self._video_tensor(mask, f"masks[{i}]", frames_only=False)
            try:
                out.append(video * (mask == 0))
            except RuntimeError as e:
                raise InvalidVideoError(
                    f"masks[{i}] of shape {tuple(mask.shape)} does not broadcast over videos[{i}] of shape "
                    f"{tuple(video.shape)}: give (N, 1, H, W) with the video's N, H, W"
                ) from e
        return out

    @staticmethod
    def _video_tensor(video: VideoInput, where: str, frames_only: bool = True) -> torch.Tensor:
        """A tensor as given, or a file's decoded frames (N, 3, H, W) uint8."""
        if isinstance(video, (str, os.PathLike)):
            return decode_video(video).frames
        if not isinstance(video, torch.Tensor):
            raise InvalidVideoError(
                f"{where} is a {type(video).__name__}: give a (frames, 3, height, width) uint8 tensor or a video file"
            )
        if frames_only and (video.dim() != 4 or video.size(1) != 3 or video.size(0) == 0):
            raise InvalidVideoError(
                f"{where} has shape {tuple(video.shape)} but must be (N, 3, H, W) with N >= 1 RGB frames"
            )
        return video

    def _load(self, audio: AudioInput, where: str) -> torch.Tensor:
        """-> (channels, L) at the processor's rate."""
        if isinstance(audio, (str, os.PathLike)):
            wav = _load_audio_file(audio, self.audio_sampling_rate)
            where = f"{where} ({os.fspath(audio)!r})"
        elif isinstance(audio, torch.Tensor):
            wav = audio  # used as given: it must already be at audio_sampling_rate
        else:
            raise InvalidAudioError(
                f"{where} is a {type(audio).__name__}: give a (channels, samples) float tensor at "
                f"{self.audio_sampling_rate} Hz or a file path"
            )
        _check_audio(wav, where, self.audio_hop_length, self.audio_sampling_rate)
        return wav

    def _select_frames(self, video: VideoInput, frames: int, where: str) -> torch.Tensor:
        """Exactly `frames` frames for an item of that many latent frames: (frames, 3, H, W).

        A file: per latent frame k, the frame nearest in presentation time to k * hop / sr (the last frame
        repeats past the end, as the official one). A tensor: N frames assumed to span the item evenly, indices
        round(linspace(0, N - 1, frames)) (float32, half to even).
        """
        if isinstance(video, (str, os.PathLike)):
            decoded = decode_video(video)
            idx = nearest_frames(decoded.times, latent_times(frames, self.audio_hop_length, self.audio_sampling_rate))
            return decoded.frames[idx]  # (frames, 3, H, W)
        video = self._video_tensor(video, where)
        idx = torch.linspace(0, video.size(0) - 1, frames).round().long()  # (frames,) float32 linspace
        return video[idx.to(video.device)]  # (frames, 3, H, W)

    def __call__(
        self,
        descriptions: list[str],
        audios: list[AudioInput],
        anchors: list[list[Anchor]] | None = None,
        masked_videos: list[VideoInput] | None = None,
    ) -> Batch:
        """One item per description: audios are (channels, samples) float tensors at the processor's rate
        (used as given, channels averaged) or file paths (read, resampled, averaged); masked videos are
        (N, 3, H, W) uint8 tensors or video files (used as given: mask them first with `mask_videos`)."""
        for name, value in (("descriptions", descriptions), ("audios", audios)):
            if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Sequence):
                raise InvalidRequestError(f"{name} must be a list (one entry per item), got {type(value).__name__}")
        if len(audios) == 0:
            raise InvalidRequestError("no audios given: pass at least one item")
        if len(descriptions) != len(audios):
            raise InvalidRequestError(
                f"{len(descriptions)} descriptions but {len(audios)} audios: give one description per audio "
                '("" for none)'
            )
        for i, d in enumerate(descriptions):
            if not isinstance(d, str):
                raise InvalidRequestError(f"descriptions[{i}] is a {type(d).__name__}, not a str")
        if anchors is not None and (not isinstance(anchors, Sequence) or len(anchors) != len(audios)):
            got = len(anchors) if isinstance(anchors, Sequence) else type(anchors).__name__
            raise InvalidRequestError(
                f"{got} anchor lists for {len(audios)} audios: give one list per item ([] for none), or None"
            )
        if masked_videos is not None and (
            isinstance(masked_videos, (str, bytes, torch.Tensor)) or not isinstance(masked_videos, Sequence)
        ):
            raise InvalidVideoError(
                f"masked_videos must be a list (one video per item), got {type(masked_videos).__name__}"
            )
        if masked_videos is not None and len(masked_videos) != len(audios):
            raise InvalidRequestError(f"{len(masked_videos)} masked videos for {len(audios)} audios: give one per item")

        mono = [self._load(a, f"audios[{i}]").mean(0) for i, a in enumerate(audios)]  # B x (L_i,)
        dtypes, devices = {w.dtype for w in mono}, {w.device for w in mono}
        if len(dtypes) > 1 or len(devices) > 1:
            raise InvalidAudioError(
                f"audios differ in dtype {sorted(map(str, dtypes))} or device {sorted(map(str, devices))}: "
                "give them all the same dtype and device (files load as float32 on CPU)"
            )
        wav_sizes = torch.tensor([w.shape[0] for w in mono], dtype=torch.long)  # (B,)
        audios_t = torch.nn.utils.rnn.pad_sequence(mono, batch_first=True)[:, None]  # (B, 1, Lmax)
        sizes = self.wav_to_feature_idx(wav_sizes)  # (B,) float32
        audio_pad_mask = mask_from_sizes(sizes)  # (B, T)

        masked_video = None
        if masked_videos is not None:
            masked_video = [
                self._select_frames(v, int(sizes[i]), f"masked_videos[{i}]") for i, v in enumerate(masked_videos)
            ]
        return Batch(
            audios=audios_t,
            sizes=sizes,
            wav_sizes=wav_sizes,
            descriptions=list(descriptions),
            hop_length=self.audio_hop_length,
            audio_sampling_rate=self.audio_sampling_rate,
            anchors=anchors,
            audio_pad_mask=audio_pad_mask,
            masked_video=masked_video,
        )
