"""Streaming separation: audio of any length, rate and channel count, separated in overlapping windows.

`SAMAudio.separate` takes a whole file in one pass: memory and time grow with the file (attention is
quadratic in frames) and nothing comes back until the end. `StreamingSeparator` takes audio in blocks of
any size and returns the stems that are final so far, holding only a few windows of state per stream.

    sep = StreamingSeparator(model, processor, "a dog barking", sample_rate=44100, channels=2)
    for frames in source:                      # (n, channels) float32, any n, 0 too
        for block in sep.push(frames):         # StemBlock(start, target, residual)
            sink(block)
    for block in sep.finish():
        sink(block)

The pipeline, each stage streaming and each equal to its whole-signal counterpart:

    input (n, ch) at `sample_rate`
      -> resample to 48 kHz (torchaudio's windowed sinc, its defaults), computed piecewise so that the result
         equals one `torchaudio.functional.resample` of the whole stream
      -> windows of `chunk_seconds` every `chunk_seconds - overlap_seconds`, on the model's grid of latent
         frames (40 ms = 1920 samples) at absolute positions: window k covers frames [k*S, k*S + W)
      -> each window separated, its channels as batch items, windows batched up to `max_batch` per call
      -> overlap-add at 48 kHz with raised-cosine cross-fades, weights divided by their sum
      -> cut to the 48 kHz length of the input, resample back (piecewise again), cut to the input length.

Choices and their reasons:

- **Windows on the latent grid, not on push boundaries.** Window k starts at latent frame k*S whatever the
  push sizes, so the same input gives the same windows; stitching and model work stay at 48 kHz, where every
  window edge is a whole number of samples for any input rate (44100, 22050, 11025, and odd ones too).
  Resampling is done once over the stream (in pieces with enough context to be exact), not per window, so
  window edges add nothing beyond what resampling itself does.
- **Shared noise.** The starting noise of latent frame f is drawn from a generator seeded by (seed, f) only,
  so overlapping windows start from the same noise where they overlap, and the result does not depend on
  how the input was pushed or which windows were batched together. The watermark message is fixed per
  stream by the seed for the same reason.
- **The last window is padded with zeros to the full window length**, always the same way, and all its
  frames count as valid (no padding mask). Zeros are silence, which is what the model sees after the end of
  a file in the official batches; they cannot leak invented content into the stems the way reflection could.
  Full-length windows without masks also make every model call a batch of equal-length, unmasked items, so
  results do not depend on the batch (GroupNorm and attention see each window alone).
- **Cross-fades.** Over the overlap, the later window fades in as sin^2 and the earlier one fades out as
  cos^2 (they sum to one); accumulated weights are divided by their sum, like demucs `apply.py`, so a
  constant passes unchanged and the first and last windows need no special case.
- **Text once per stream, on the worker.** The description is encoded by the model's T5 when the worker runs
  the stream's first window (`StreamText`), on the thread that runs the model, and the features are reused by
  every window (`text_features` of `SAMAudio.separate`).
- **Anchors** ("+"/"-", start, end in absolute seconds) are mapped to absolute latent frames with the
  processor's rule (`ceil(t * 48000 / 1920)`), clipped to each window and handed to it in window seconds
  (half a frame before each edge frame, so the processor's `ceil` finds exactly those frames again).
  A window that no anchor reaches gets none.
- **A masked video** (`VideoPrompt`: frames with the object masked, and their times) prompts visually. Each
  window gets, for each of its latent frames f, the frame shown nearest to f * 40 ms (the earlier one on ties),
  which is the processor's rule for video files applied at absolute times, so windows agree where they
  overlap. Latent frames at or after the video's end get no frame: the vision encoder pads each window's
  features with zeros, as the official model pads a batch item's features past its frames, and zeros are
  exactly what the model sees without a video. (The offline processor instead repeats a file's last frame
  until the audio ends; a stream cannot know at the video's end that more audio will come.) A window's frames
  ride in its `WindowJob`, the same for each channel; an empty description is allowed with a video.

- **Candidates and spans per window** (issue 16). With `candidates=K` each window is solved from K noises,
  candidate c drawn by `frame_noise(seed, first_frame, W, 2C, c)`, so results stay independent of push sizes;
  the model's ranker keeps one per channel (the official rule of `SAMAudio.choose_candidates`, each channel an
  item). `predict_spans=True` prompts a window without anchors with "+" anchors on the frames the span predictor
  finds active in it. The span gate (on by default when the model has its span predictor) skips a window in
  which no channel has an active frame: its target is silence and its residual the mix, where the model would
  otherwise return other sounds of the mix (official issue #94).

Default window (`samaudio.defaults`): 10 s chunks overlapping by 2 s. Longer windows give the DiT more context (a sound's
identity is clearer over seconds; attention cost grows with the square of the window) and need fewer
seams; longer overlaps hide seams better but cost compute: each frame is separated W / (W - V) times on
average (1.25x at 10 s / 2 s). Other SAM-Audio chunkers use 10 s with 1 to 3 s cross-fades, or 25 s with
0.5 s; 10 s / 2 s keeps the first stems within about 10 s of audio for live input, bounds a window's memory,
and gives a cross-fade long enough (2 s) that two windows that hear a sound slightly differently blend
without an audible step. A window may not exceed the DiT's position table (10000 frames = 400 s).

Errors: bad arguments raise named errors (`samaudio.errors`) from the constructor or `validate`, before any
model work. A bad block in `push` (wrong shape or channel count, non-float, non-finite) is rejected whole
before it changes any state: the separator stays usable. An error from the model or the worker closes the
stream (later calls raise `StreamClosedError`), as `cancel()` does.

Legend: ch channels, n frames at the input rate, L samples at 48 kHz, W / V / S window / overlap / stride in
latent frames, H hop (samples per latent frame at 48 kHz), C codec latent channels, S_t text tokens,
Dt text feature width, N video frames, F video frames of one window (<= W), Hv x Wv video frame size.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import numbers
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torchaudio

from samaudio.defaults import STREAM_DEFAULTS
from samaudio.errors import (
    CancelledError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    InvalidVideoError,
    PartNotLoadedError,
    StreamClosedError,
)
from samaudio.model.span_predictor import DEFAULT_THRESHOLD
from samaudio.processor import TIE_SECONDS, decode_video, latent_times, nearest_frames

if TYPE_CHECKING:
    from samaudio.model.model import SAMAudio
    from samaudio.processor import Batch, SAMAudioProcessor

logger = logging.getLogger(__name__)

__all__ = [
    "StreamingSeparator",
    "StemBlock",
    "WindowJob",
    "StreamText",
    "WindowStems",
    "WindowWorker",
    "LocalWorker",
    "WindowPlan",
    "VideoPrompt",
    "Progress",
    "frame_noise",
    "watermark_bits",
    "separate_windows",
    "window_batch",
]

Anchor = tuple[str, float, float]  # (sign, start_seconds, end_seconds), sign "+" present / "-" absent
Progress = Callable[[int, int], None]  # on_progress(frames_done, frames_known), both at the input rate

NOISE_CHUNK_FRAMES = 25  # latent frames drawn from one generator (1 s): see frame_noise
WATERMARK_BITS = 16  # the codec's message length (dacvae NBITS)
RESAMPLE_WIDTH = 6  # torchaudio's defaults (lowpass_filter_width, rolloff): the margins below depend on them
RESAMPLE_ROLLOFF = 0.99
# torchaudio's kernel has (new/g) x (orig/g + 2*width) taps, g = gcd(orig, new): tiny for the usual rates (all
# multiples of 25 Hz, e.g. 44100 -> 160 x 161) but huge when the rates share few factors (44101 Hz: 16000 x 14714,
# about 1 GB and slow). Such rates are refused rather than allowed to take a server's memory.
MAX_RESAMPLE_TAPS = 2**24
# Largest accepted |sample|: 60 dB above full scale. Beyond it float32 arithmetic in resampling, the codec and the
# overlap-add can overflow to inf/NaN (3.4e38 samples did, at some rates and not others), so such input is refused
# at every rate alike (issue 19).
MAX_SAMPLE = 1000.0


# ----------------------------------------------------------------------------------------------------------
# Noise and watermark: functions of the seed and absolute positions only


def frame_noise(seed: int, first_frame: int, frames: int, width: int, candidate: int = 0) -> torch.Tensor:
    """Starting noise of latent frames [first_frame, first_frame + frames): (frames, width) float32.

    Frames are drawn in absolute chunks of NOISE_CHUNK_FRAMES rows, chunk c from a generator seeded by
    (seed, candidate, c) alone, so row f depends on (seed, candidate, f) only and any two windows that share a
    frame share its noise. One generator per chunk rather than per row: seeding a generator costs ~25 us, ten
    times the draw. Candidate 0 keeps the single-candidate stream's noise, so K = 1 results never change.
    """
    if frames <= 0:
        return torch.zeros(0, width)
    K = NOISE_CHUNK_FRAMES
    c0, c1 = first_frame // K, (first_frame + frames - 1) // K
    block = np.concatenate(
        [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence(_seed_entropy(seed), spawn_key=key)))
            .standard_normal((K, width), dtype=np.float32)
            for key in (_noise_key(candidate, c) for c in range(c0, c1 + 1))
        ]
    )  # ((c1 - c0 + 1) * K, width)
    a = first_frame - c0 * K
    return torch.from_numpy(np.ascontiguousarray(block[a : a + frames]))  # (frames, width)


def _noise_key(candidate: int, chunk: int) -> tuple[int, ...]:
    return (2, chunk) if candidate == 0 else (3, candidate, chunk)  # 2: candidate 0, as before candidates existed


def watermark_bits(seed: int) -> torch.Tensor:
    """The stream's watermark messages: (2, 16) float bits, row 0 for the target, row 1 for the residual."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(_seed_entropy(seed), spawn_key=(1,))))
    return torch.from_numpy(rng.integers(0, 2, (2, WATERMARK_BITS)).astype(np.float32))  # (2, 16)


def _seed_entropy(seed: int) -> int:
    return int(seed) & (2**64 - 1)  # SeedSequence wants a non-negative integer; negative seeds wrap


# ----------------------------------------------------------------------------------------------------------
# The window plan: where windows sit, how they are weighted


@dataclass(frozen=True)
class WindowPlan:
    """Windows of `frames` latent frames every `stride` frames, from frame 0, at the model's rate."""

    frames: int  # W: latent frames per window
    overlap: int  # V: latent frames shared by neighbouring windows
    hop: int  # H: samples per latent frame at the model's rate (1920)
    sample_rate: int  # the model's rate (48000)

    @property
    def stride(self) -> int:  # S
        return self.frames - self.overlap

    @property
    def samples(self) -> int:
        """Samples per window at the model's rate."""
        return self.frames * self.hop

    def start(self, k: int) -> int:
        """First sample of window k at the model's rate."""
        return k * self.stride * self.hop

    def needed(self, k: int, length: int) -> bool:
        """Whether window k is needed to cover `length` samples (the first always is, if there are any)."""
        if k == 0:
            return length > 0
        return self.start(k - 1) + self.samples < length

    def count(self, length: int) -> int:
        """Windows needed to cover `length` samples at the model's rate."""
        if length <= 0:
            return 0
        return 1 + max(0, -(-(length - self.samples) // (self.stride * self.hop)))

    @functools.cached_property
    def _fade_in(self) -> torch.Tensor:
        n = self.overlap * self.hop
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return torch.sin(0.5 * math.pi * t).pow(2).float()  # (V*H,) rises from ~0 to ~1; flipped it is cos^2

    def weights(self, k: int) -> torch.Tensor:
        """Overlap-add weights of window k: (W*H,) in (0, 1]; neighbours' weights sum to one over an overlap.

        Read-only: every window but the first shares one tensor.
        """
        return self._weights_first if k == 0 else self._weights_rest

    def _make_weights(self, first: bool) -> torch.Tensor:
        w = torch.ones(self.samples)
        n = self.overlap * self.hop
        if n:
            if not first:
                w[:n] *= self._fade_in
            w[-n:] *= self._fade_in.flip(0)
        return w

    @functools.cached_property
    def _weights_first(self) -> torch.Tensor:
        return self._make_weights(first=True)

    @functools.cached_property
    def _weights_rest(self) -> torch.Tensor:
        return self._make_weights(first=False)


class OverlapAdd:
    """Weighted windows summed into one signal and read out in order, normalised by the summed weights.

    One buffer of `rows` x `capacity` samples is kept for the whole stream: adding a window and taking the
    final samples allocate nothing but the output, so stitching costs the same for every window.
    """

    def __init__(self, rows: int, capacity: int):
        # columns past `length` are garbage until `add` zeroes them as a window first reaches them
        self._acc = torch.empty(rows, capacity)  # (rows, capacity) weighted sum from sample `start` on
        self._den = torch.empty(capacity)  # (capacity,) summed weights
        self.start = 0  # the stream sample of column 0
        self.length = 0  # columns in use

    def add(self, at: int, parts: Sequence[torch.Tensor], weights: torch.Tensor) -> None:
        """Add a window from stream sample `at` (>= start) on: `parts` (r_i, n) fill the rows in order, each
        times `weights` (n,), which count once in the normalisation."""
        a = at - self.start
        end = a + weights.shape[0]
        assert a >= 0, (at, self.start)
        if end > self._den.shape[0]:  # more windows in flight than planned for: grow once
            grow = end - self._den.shape[0]
            self._acc = torch.nn.functional.pad(self._acc, (0, grow))
            self._den = torch.nn.functional.pad(self._den, (0, grow))
        if end > self.length:
            self._acc[:, self.length : end].zero_()
            self._den[self.length : end].zero_()
            self.length = end
        row = 0
        for part in parts:
            # += part * weights, without the temporaries
            self._acc[row : row + part.shape[0], a:end].addcmul_(part, weights)
            row += part.shape[0]
        self._den[a:end] += weights

    def take(self, upto: int) -> torch.Tensor:
        """The finished signal from `start` to stream sample `upto`, which no later window touches: (rows, m)."""
        n = upto - self.start
        z = self._acc[:, :n] / self._den[:n]  # (rows, n)
        rest = self.length - n
        if rest > 0:  # the part later windows still add to moves to the front (a copy first when they overlap)
            kept, den = self._acc[:, n : self.length], self._den[n : self.length]
            if rest > n:
                kept, den = kept.clone(), den.clone()
            self._acc[:, :rest].copy_(kept)
            self._den[:rest].copy_(den)
        self.length = max(rest, 0)
        self.start = upto
        return z


# ----------------------------------------------------------------------------------------------------------
# The visual prompt


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
    ) -> "VideoPrompt":
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
        cls, source: "str | os.PathLike | bytes", masks: torch.Tensor | None = None, *, max_bytes: int | None = None
    ) -> "VideoPrompt":
        """A video file (a path or its bytes), decoded whole with PyAV; `masks` as in `from_frames`, one per
        decoded frame. `max_bytes` bounds the decoded frames (`VideoTooLargeError` beyond)."""
        decoded = decode_video(source, max_bytes=max_bytes)
        video = cls(frames=decoded.frames, times=decoded.times, end_seconds=decoded.end_seconds)
        return video if masks is None else video.with_masks(masks)

    def with_masks(self, masks: torch.Tensor) -> "VideoPrompt":
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
        return dataclasses.replace(self, frames=self.frames * (m == 0))  # (N, 3, Hv, Wv), the object blacked out

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


# ----------------------------------------------------------------------------------------------------------
# Work units and the worker interface


class StreamText:
    """A stream's description, encoded by the model's T5 once, on first use, by the thread that runs the model.

    Every window of a stream carries the same `StreamText`; the worker that separates the first window encodes
    it (`features`), later windows reuse the features. Encoding on the worker keeps all model work on the one
    thread that owns the device (issue 15: it used to run on the stream's own thread).
    """

    def __init__(self, description: str):
        self.description = description
        self._encoded: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()  # two workers never encode one stream's text twice

    def __getstate__(self) -> dict[str, Any]:  # a job crosses processes (the cluster backend): not its lock
        return {"description": self.description, "_encoded": self._encoded}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def features(self, model: "SAMAudio") -> tuple[torch.Tensor, torch.Tensor]:
        """((1, S_t, Dt) features, (1, S_t) bool mask, True on tokens), encoded on the first call."""
        with self._lock:
            if self._encoded is None:
                with torch.inference_mode():
                    self._encoded = model.encode_text([self.description])
            return self._encoded


@dataclass
class WindowJob:
    """Everything the model needs to separate one window of one stream."""

    audio: torch.Tensor  # (ch, W*H) float32 at 48 kHz, CPU; zero-padded to the full window
    text: StreamText  # the stream's description, encoded by the worker on first use
    anchors: list[Anchor]  # in window seconds; [] when no anchor reaches this window
    noise: torch.Tensor  # (W, 2C) float32 starting noise shared by the window's channels; (K, W, 2C) for K > 1
    watermark_message: torch.Tensor  # (2, 16) float bits: row 0 target, row 1 residual
    ode_opt: dict[str, Any] | None = None  # torchdiffeq method/options; None = the model's default
    index: int = 0  # window index in its stream (k), for logs
    first_frame: int = 0  # absolute latent frame of the window's start
    # (F, 3, Hv, Wv) uint8 masked frames of latent frames [first_frame, first_frame + F), F <= W (0 past the
    # video's end); None when the stream has no video. The same frames prompt every channel.
    masked_video: torch.Tensor | None = None
    # True once nobody wants this window any more (its stream was cancelled): the model stops at its next solver
    # step when every job of its call says so (issue 19). None: run to the end.
    should_stop: Callable[[], bool] | None = None
    # The span predictor per window: `predict_spans` prompts a window without anchors with "+" anchors on its
    # active frames (the library's "fixed" mode); `span_gate` skips a window with no active frame in any channel
    # (target silence, residual the mix: official issue #94). Both need a model loaded with its span predictor.
    predict_spans: bool = False
    span_gate: bool = False
    span_threshold: float = DEFAULT_THRESHOLD
    # Called after every vector-field evaluation of the model call that runs this job, with the call's count so
    # far, from the thread that runs the model: progress inside a window (issue 17). None: not told.
    on_step: Callable[[int], None] | None = None
    # Whether the stream uses the model's residual of this window: False (a target-only stream, several prompts,
    # null-sum) decodes the target alone, about half the codec's decode time (issue 20).
    decode_residual: bool = True

    @property
    def description(self) -> str:
        return self.text.description

    @property
    def candidates(self) -> int:
        """K: starting noises the window is solved from (a ranker keeps one per channel)."""
        return self.noise.shape[0] if self.noise.dim() == 3 else 1


@dataclass
class WindowStems:
    """The stems of one window at 48 kHz (CPU float32)."""

    target: torch.Tensor  # (ch, W*H) the described sound
    residual: torch.Tensor | None  # (ch, W*H) everything else; None when the job decoded no residual
    nfe: int = 0  # vector-field evaluations the solver made for this window
    scores: torch.Tensor | None = None  # (ch, K) ranker scores per channel; None when no ranker ran (K = 1, gated)
    chosen: torch.Tensor | None = None  # (ch,) int64: the candidate kept per channel; None when none was ranked
    gated: bool = False  # the span gate found no activity: target silence, residual the window's mix


@runtime_checkable
class WindowWorker(Protocol):
    """Runs windows. A pool that batches jobs of several streams on a device implements the same method."""

    def submit(self, jobs: Sequence[WindowJob]) -> concurrent.futures.Future[list[WindowStems]]:
        """Separate `jobs`; the future resolves to one `WindowStems` per job, in order."""
        ...


def separate_windows(model: "SAMAudio", processor: "SAMAudioProcessor", jobs: Sequence[WindowJob]) -> list[WindowStems]:
    """Run jobs through `model.separate`, one call per group of jobs with the same length and ODE options.

    Each channel of each job is one batch item; rows of one call are equally long and unmasked, so a job's
    stems do not depend on which jobs share its call. Jobs of different streams may have different text
    lengths: features are zero-padded and masked.
    """
    out: list[WindowStems | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = (job.audio.shape[-1], repr(job.ode_opt), job.candidates, job.predict_spans, job.span_gate,
               job.decode_residual)
        groups.setdefault(key + (job.span_threshold,), []).append(i)
    for idx in groups.values():
        for i, stems in zip(idx, _separate_group(model, processor, [jobs[i] for i in idx])):
            out[i] = stems
    return out  # type: ignore[return-value]


def window_batch(
    processor: "SAMAudioProcessor", jobs: Sequence[WindowJob], anchors: Sequence[list[Anchor]] | None = None
) -> "Batch":
    """The processor batch of `jobs`: one item per channel of each job, in order, each with its job's anchors
    (or `anchors`, one list per item) and masked video frames."""
    batch = processor(
        descriptions=[job.description for job in jobs for _ in range(job.audio.shape[0])],
        audios=[job.audio[c : c + 1] for job in jobs for c in range(job.audio.shape[0])],  # B x (1, W*H)
        anchors=[list(a) for a in anchors]
        if anchors is not None
        else [list(job.anchors) for job in jobs for _ in range(job.audio.shape[0])],
    )
    if any(job.masked_video is not None for job in jobs):
        # Set here, not through the processor, which would stretch F < W frames over the window. The encoder pads
        # each item's features to the window with zeros, so a job without video (or past its video's end) gets
        # exactly the zeros the model uses when no item has a video: results do not depend on the batch.
        none = torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        batch.masked_video = [
            none if job.masked_video is None else job.masked_video for job in jobs for _ in range(job.audio.shape[0])
        ]
    return batch


def _separate_group(model: "SAMAudio", processor: "SAMAudioProcessor", jobs: list[WindowJob]) -> list[WindowStems]:
    """Jobs of equal length, ODE, candidate count and span settings, in one model call (gated ones in none)."""
    out: list[WindowStems | None] = [None] * len(jobs)
    anchors: list[list[Anchor]] | None = None
    first = jobs[0]
    if first.predict_spans or first.span_gate:
        active = _window_activity(model, processor, jobs, first.span_threshold)  # B x (W,) bool, one per channel
        rows = _job_rows(jobs)
        if first.span_gate:
            for i, (job, (a, b)) in enumerate(zip(jobs, rows)):
                if not any(bool(act.any()) for act in active[a:b]):
                    target = torch.zeros_like(job.audio)  # (ch, W*H) silence
                    out[i] = WindowStems(target=target, residual=job.audio.clone(), gated=True)
        if first.predict_spans:  # a window's own anchors win, as in SAMAudio.separate
            predicted = _activity_anchors(model, active)
            anchors = [list(job.anchors) or predicted[r] for job, (a, b) in zip(jobs, rows) for r in range(a, b)]
    run = [i for i in range(len(jobs)) if out[i] is None]
    if run:
        if anchors is not None:
            rows = _job_rows(jobs)
            anchors = [anchors[r] for i in run for r in range(*rows[i])]
        for i, stems in zip(run, _solve(model, processor, [jobs[i] for i in run], anchors)):
            out[i] = stems
    return out  # type: ignore[return-value]


def _job_rows(jobs: Sequence[WindowJob]) -> list[tuple[int, int]]:
    """Each job's batch items (one per channel) as [a, b) row ranges."""
    rows, r = [], 0
    for job in jobs:
        rows.append((r, r + job.audio.shape[0]))
        r += job.audio.shape[0]
    return rows


def _window_activity(
    model: "SAMAudio", processor: "SAMAudioProcessor", jobs: Sequence[WindowJob], threshold: float
) -> list[torch.Tensor]:
    """The span predictor's active latent frames of every channel of every job: B tensors (W,) bool."""
    batch = window_batch(processor, jobs, anchors=[[] for job in jobs for _ in range(job.audio.shape[0])])
    with torch.inference_mode():
        z = model.audio_codec(batch.audios.to(model.device, model.dtype)).transpose(1, 2)  # (B, W, C)
        _, active = model.frame_activity(list(batch.descriptions), torch.cat([z, z], dim=-1), None, threshold)
    return list(active.cpu())  # B x (W,)


def _activity_anchors(model: "SAMAudio", active: list[torch.Tensor]) -> list[list[Anchor]]:
    """'+' anchors (window seconds) on each item's active runs, as SAMAudio.predict_spans makes them."""
    from samaudio.model.span_predictor import anchors_from_spans, spans_from_activity

    predictor = model.span_predictor
    spans = spans_from_activity(torch.stack(active), predictor.hop_length, predictor.sample_rate)
    return [list(a) for a in anchors_from_spans(spans)]


def _solve(
    model: "SAMAudio",
    processor: "SAMAudioProcessor",
    jobs: list[WindowJob],
    anchors: list[list[Anchor]] | None,
) -> list[WindowStems]:
    channels = [job.audio.shape[0] for job in jobs]
    K = jobs[0].candidates
    batch = window_batch(processor, jobs, anchors)
    texts = [job.text.features(model) for job in jobs]  # [((1, S_t, Dt), (1, S_t))]
    S = max(features.shape[1] for features, _ in texts)
    feats, masks = [], []
    for (features, mask), ch in zip(texts, channels):
        pad = S - features.shape[1]
        f = torch.nn.functional.pad(features, (0, 0, 0, pad))  # (1, S, Dt)
        m = torch.nn.functional.pad(mask, (0, pad), value=False)  # (1, S)
        feats.append(f.expand(ch, -1, -1))
        masks.append(m.expand(ch, -1))
    # rows b*K + k: candidate k of item b; every channel of a job starts from the job's K noises
    noise = torch.cat(
        [job.noise.reshape(K, *job.noise.shape[-2:]).repeat(ch, 1, 1) for job, ch in zip(jobs, channels)]
    )  # (B*K, W, 2C)
    # rows 2n, 2n+1 are target and residual of row n: each row repeats its job's two messages
    message = torch.cat([job.watermark_message.repeat(ch * K, 1) for job, ch in zip(jobs, channels)])  # (2BK, 16)
    res = model.separate(
        batch,
        noise=noise.to(model.device),
        ode_opt=jobs[0].ode_opt,
        reranking_candidates=K,
        watermark_message=message.to(model.device),
        text_features=(torch.cat(feats).to(model.device), torch.cat(masks).to(model.device)),
        should_stop=_all_stopped(jobs),
        on_step=_each_step(jobs),
        stems=("target", "residual") if jobs[0].decode_residual else ("target",),
    )
    out, r = [], 0
    for ch in channels:
        target = torch.stack([res.target[r + c] for c in range(ch)]).float().cpu()  # (ch, W*H)
        residual = None
        if res.residual is not None:
            residual = torch.stack([res.residual[r + c] for c in range(ch)]).float().cpu()  # (ch, W*H)
        scores = None if res.scores is None else res.scores[r : r + ch].clone()  # (ch, K)
        chosen = None if res.scores is None else res.chosen[r : r + ch].clone()  # (ch,)
        out.append(WindowStems(target=target, residual=residual, nfe=res.nfe, scores=scores, chosen=chosen))
        r += ch
    return out


def _all_stopped(jobs: Sequence[WindowJob]) -> Callable[[], bool] | None:
    """A `should_stop` for one model call: stop once no job of it is wanted (None when some job cannot stop)."""
    checks = [job.should_stop for job in jobs]
    if any(check is None for check in checks):
        return None
    return lambda: all(check() for check in checks)


def _each_step(jobs: Sequence[WindowJob]) -> Callable[[int], None] | None:
    """An `on_step` for one model call: tells every job that asked, once per evaluation."""
    hooks = [job.on_step for job in jobs if job.on_step is not None]
    if not hooks:
        return None

    def on_step(evaluations: int) -> None:
        for hook in hooks:
            hook(evaluations)

    return on_step


class LocalWorker:
    """Runs jobs synchronously in the caller's thread and returns a completed future."""

    def __init__(self, model: "SAMAudio", processor: "SAMAudioProcessor | None" = None):
        if processor is None:
            from samaudio.processor import SAMAudioProcessor

            processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
        self.model = model
        self.processor = processor

    def submit(self, jobs: Sequence[WindowJob]) -> concurrent.futures.Future[list[WindowStems]]:
        future: concurrent.futures.Future[list[WindowStems]] = concurrent.futures.Future()
        try:
            future.set_result(separate_windows(self.model, self.processor, jobs))
        except BaseException as e:  # delivered through the future, as a pool's worker thread would
            future.set_exception(e)
        return future


# ----------------------------------------------------------------------------------------------------------
# Piecewise resampling, equal to resampling the whole stream at once


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # = torchaudio.functional.resample with its defaults on float32 audio (whose kernel it computes in float32),
    # the kernel built once and shared read-only by every stream at this pair of rates
    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


def _resample_taps(orig: int, new: int) -> int:
    if orig == new:
        return 0
    g = math.gcd(orig, new)
    return new // g * (orig // g + 2 * _resample_width(orig // g, new // g))


def _resample_width(step_in: int, step_out: int) -> int:
    """torchaudio's one-sided kernel width in input samples, for rates already divided by their gcd."""
    return math.ceil(RESAMPLE_WIDTH * step_in / (RESAMPLE_ROLLOFF * min(step_in, step_out)))


class _StreamResampler:
    """`torchaudio.functional.resample(whole, orig, new)`, computed as the signal arrives.

    torchaudio's output comes in blocks of `step_out` samples per `step_in` input samples (rates divided by
    their gcd); block b reads input samples [b*step_in - width, (b+1)*step_in + width) (zeros outside the
    signal). Block b is final once the input reaches (b+1)*step_in + margin, margin >= width a multiple of
    step_in; a piece that starts `margin` before the first missing block and ends `margin` after the last
    final one yields exactly those blocks.
    """

    def __init__(self, orig: int, new: int, channels: int):
        g = math.gcd(orig, new)
        self.orig, self.new = orig, new
        self.step_in, self.step_out = orig // g, new // g
        width = _resample_width(self.step_in, self.step_out)
        self.margin = 0 if orig == new else -(-width // self.step_in) * self.step_in
        self.n_in = 0  # samples received
        self.n_out = 0  # samples returned
        self._blocks = 0  # output blocks returned
        self._buf = torch.zeros(channels, self.margin)  # (ch, m) input from blocks*step_in - margin on
        self._finished = False

    @property
    def held(self) -> int:
        return self._buf.shape[-1]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """(ch, n) more input -> (ch, m) output that no later input can change."""
        self.n_in += x.shape[-1]
        if self.orig == self.new:
            self.n_out += x.shape[-1]
            return x
        self._buf = torch.cat([self._buf, x], dim=-1)
        return self._emit(max(self._blocks, (self.n_in - self.margin) // self.step_in))

    def finish(self) -> torch.Tensor:
        """The rest of the output, ceil(n_in * new / orig) samples in all, the input taken as zero after its end."""
        assert not self._finished
        self._finished = True
        total = -(-self.n_in * self.step_out // self.step_in)
        if self.orig == self.new:
            return self._buf[:, :0]
        last = -(-self.n_in // self.step_in)  # blocks that touch the signal
        need = last * self.step_in + self.margin - (self._blocks * self.step_in - self.margin)
        if self._buf.shape[-1] < need:
            self._buf = torch.nn.functional.pad(self._buf, (0, need - self._buf.shape[-1]))
        y = self._emit(max(self._blocks, last))
        keep = y.shape[-1] - (self.n_out - total)
        self.n_out = total
        return y[:, :keep]

    def _emit(self, blocks: int) -> torch.Tensor:
        n = blocks - self._blocks
        if n <= 0:
            return self._buf[:, :0]
        piece = self._buf[:, : n * self.step_in + 2 * self.margin]
        y = _resampler(self.orig, self.new)(piece)  # (ch, (n*step_in + 2*margin) * step_out / step_in)
        skip = self.margin // self.step_in * self.step_out
        y = y[:, skip : skip + n * self.step_out]
        self._buf = self._buf[:, n * self.step_in :]
        self._blocks = blocks
        self.n_out += y.shape[-1]
        return y


# ----------------------------------------------------------------------------------------------------------
# The stream


@dataclass
class StemBlock:
    """Final stems of input frames [start, start + frames), at the input rate."""

    start: int  # first frame, at the input rate
    target: np.ndarray  # (frames, ch) float32, the first prompt's
    residual: np.ndarray  # (frames, ch) float32
    targets: list[np.ndarray] = dataclasses.field(default_factory=list)  # P x (frames, ch): one per prompt, in order

    @property
    def frames(self) -> int:
        return self.target.shape[0]


@dataclass(frozen=True)
class Prompt:
    """One sound of a stream that separates several (`StreamingSeparator(prompts=...)`)."""

    description: str
    anchors: Sequence[Anchor] = ()  # (sign, start_seconds, end_seconds) in the stream's seconds
    seed: int | None = None  # None: the stream's seed


class _PromptState:
    """What a stream keeps per prompt: anchors in absolute latent frames, seed, watermark, text, last noise."""

    def __init__(self, prompt: Prompt, seed: int, plan: WindowPlan):
        self.description = prompt.description
        self.anchors = _check_anchors(prompt.anchors)
        self.seed = int(seed if prompt.seed is None else prompt.seed)
        # absolute latent frames of each anchor, by the processor's rule (Python floats, multiply then divide)
        self.anchor_frames = [
            (sign, math.ceil(s * plan.sample_rate / plan.hop), math.ceil(e * plan.sample_rate / plan.hop))
            for sign, s, e in self.anchors
        ]
        self.message = watermark_bits(self.seed)  # (2, 16)
        self.text = StreamText(self.description)  # encoded by the worker, on the first window
        # per candidate: (first frame, (W, 2C)) of the last window's noise
        self.noise: dict[int, tuple[int, torch.Tensor]] = {}


NULL_SUM_GRID = 2.0**-23  # null-sum targets are rounded to the 24-bit PCM grid, so that input - targets is exact


def null_sum_residual(mix: np.ndarray, targets: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """(targets on the 24-bit grid, mix minus their sum): float32 stems that add back up to `mix`.

    Rounding the targets to multiples of 2^-23 (at most 6e-8 away, the resolution of a 24-bit file) makes the
    sum and the difference exact for a mix on that grid (every 16- and 24-bit source) while no stem or partial
    sum reaches twice full scale: then the targets plus the residual give the mix exactly, in float32 or
    float64, in any order. Other float mixes are met to within the residual's float32 rounding.
    """
    q = [np.rint(t.astype(np.float64) / NULL_SUM_GRID) * NULL_SUM_GRID for t in targets]  # exact in float64
    residual = mix.astype(np.float64) - np.sum(q, axis=0)  # exact for a mix on the grid
    return [t.astype(np.float32) for t in q], residual.astype(np.float32)


def _check_anchors(anchors: Any) -> list[Anchor]:
    if isinstance(anchors, (str, bytes)) or not isinstance(anchors, Sequence):
        raise InvalidAnchorError(
            f"anchors must be a list of (sign, start_seconds, end_seconds) triples, got {type(anchors).__name__}"
        )
    from samaudio.processor import _check_anchor  # one rule, and one wording, for anchors everywhere

    return [_check_anchor(anchor, f"anchors[{k}]") for k, anchor in enumerate(anchors)]


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class StreamingSeparator:
    """One stream: push blocks of frames, get back the stems that are final; `finish()` flushes the rest.

    Counters for summaries: `frames_in`, `frames_out` (input rate), `windows_done`, `nfe` (vector-field
    evaluations summed over windows). Not thread-safe except `cancel()`, which may come from any thread.
    """

    def __init__(
        self,
        model: "SAMAudio",
        processor: "SAMAudioProcessor | None",
        description: str,
        anchors: Sequence[Anchor] = (),
        *,
        sample_rate: int,
        channels: int,
        chunk_seconds: float = STREAM_DEFAULTS.chunk_seconds,
        overlap_seconds: float = STREAM_DEFAULTS.overlap_seconds,
        seed: int = STREAM_DEFAULTS.seed,
        ode_opt: dict[str, Any] | None = None,
        max_batch: int = STREAM_DEFAULTS.windows_per_stream_call,
        on_progress: Progress | None = None,
        worker: WindowWorker | None = None,
        video: VideoPrompt | None = None,
        candidates: int = STREAM_DEFAULTS.candidates,
        predict_spans: bool = False,
        span_gate: bool | None = None,
        span_threshold: float = DEFAULT_THRESHOLD,
        prompts: Sequence[Prompt] | None = None,
        null_sum: bool = False,
        total_frames: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
        residual: bool = True,
    ):
        self.plan = self.validate(
            model,
            description,
            anchors,
            sample_rate=sample_rate,
            channels=channels,
            chunk_seconds=chunk_seconds,
            overlap_seconds=overlap_seconds,
            seed=seed,
            ode_opt=ode_opt,
            max_batch=max_batch,
            video=video,
            candidates=candidates,
            predict_spans=predict_spans,
            span_gate=span_gate,
            span_threshold=span_threshold,
            prompts=prompts,
            total_frames=total_frames,
        )
        self.model = model
        prompts = [Prompt(description, tuple(anchors))] if prompts is None else list(prompts)
        self.description = prompts[0].description
        self.anchors = _check_anchors(prompts[0].anchors)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seed = int(seed)
        self.ode_opt = ode_opt
        self.max_batch = int(max_batch)
        self.on_progress = on_progress
        self.on_step = on_step
        self.video = video  # freed when the stream closes
        self.candidates = int(candidates)
        self.predict_spans = bool(predict_spans)
        self.span_gate = self.gate_default(model) if span_gate is None else bool(span_gate)
        self.span_threshold = float(span_threshold)
        self.worker: WindowWorker = worker if worker is not None else LocalWorker(model, processor)
        self.null_sum = bool(null_sum)
        self.total_frames = None if total_frames is None else int(total_frames)
        if self.total_frames is not None:
            self.plan = self._planned_for(self.plan, self.total_frames)

        plan = self.plan
        self._width = 2 * model.config.audio_codec.codebook_dim  # 2C noise channels per frame
        self._prompts = [_PromptState(p, self.seed, plan) for p in prompts]
        # The model's residual of one prompt is everything but that sound; with several prompts (or null-sum) the
        # residual is the mix minus the targets, made at the input rate from the frames pushed (_blocks).
        # A caller that takes no residual (`residual=False`) gets the mix minus the target, made the same way, and
        # the model decodes the target alone.
        self._model_residual = len(self._prompts) == 1 and not self.null_sum and bool(residual)
        P, ch = len(self._prompts), self.channels
        self._rows = P * ch + (ch if self._model_residual else 0)  # targets by prompt, then the model's residual
        self._x: list[torch.Tensor] = []  # (ch, m) input frames not yet emitted, kept when the residual needs them
        # evaluations per window, for progress inside windows (None until the solver says: learned from window 0)
        from samaudio.model.model import ode_evaluations

        self._evals_per_window = ode_evaluations(ode_opt)
        self.evaluations_done = 0  # vector-field evaluations made for this stream, counted per prompt
        self._evals_base = 0  # evaluations_done before the running submission
        self._step_counts: list[int] = []  # evaluations of each job of the running submission

        self._up = _StreamResampler(self.sample_rate, plan.sample_rate, self.channels)
        self._down = _StreamResampler(plan.sample_rate, self.sample_rate, self._rows)
        self._y = torch.zeros(self.channels, 0)  # (ch, L) input at 48 kHz from sample _y_start on
        self._y_pieces: list[torch.Tensor] = []  # (ch, m) input after _y, joined to it only when a window is cut
        self._y_len = 0  # samples in _y and _y_pieces together
        self._y_start = 0
        self._next = 0  # next window to run
        # target rows then residual rows, room for one model call's windows: (max_batch - 1) strides + a window
        self._ola = OverlapAdd(self._rows, (self.max_batch - 1) * plan.stride * plan.hop + plan.samples)

        self.frames_in = 0
        self.frames_out = 0  # frames whose stems are final (returned, or returned by this call)
        self._emitted = 0  # frames handed out in blocks
        self.windows_done = 0
        self.nfe = 0
        self.windows_gated = 0  # windows the span gate found silent (no model call)
        self.candidates_evaluated = 0  # candidate solutions solved, over windows and channels
        self.chosen_scores: list[float] = []  # the kept candidate's ranker score, per ranked window and channel
        self._closed: str | None = None  # why the stream is closed, once it is
        self._cancelled = threading.Event()
        self._busy = threading.Lock()  # held while push/finish run
        self._pending: concurrent.futures.Future | None = None

    # ------------------------------------------------------------------ checks, before any model work

    @staticmethod
    def validate(
        model: "SAMAudio",
        description: str,
        anchors: Sequence[Anchor] = (),
        *,
        sample_rate: int,
        channels: int,
        chunk_seconds: float = STREAM_DEFAULTS.chunk_seconds,
        overlap_seconds: float = STREAM_DEFAULTS.overlap_seconds,
        seed: int = STREAM_DEFAULTS.seed,
        ode_opt: dict[str, Any] | None = None,
        max_batch: int = STREAM_DEFAULTS.windows_per_stream_call,
        video: VideoPrompt | None = None,
        candidates: int = STREAM_DEFAULTS.candidates,
        predict_spans: bool = False,
        span_gate: bool | None = None,
        span_threshold: float = DEFAULT_THRESHOLD,
        prompts: Sequence[Prompt] | None = None,
        total_frames: int | None = None,
    ) -> WindowPlan:
        """Check a stream's arguments without model work: named errors with the numbers and the fix.

        Returns the window plan for a stream of unknown length (the constructor shortens it for a short
        `total_frames`). Times are rounded to whole latent frames (40 ms at 48 kHz).
        """
        if prompts is not None:
            if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
                raise InvalidRequestError(
                    f"prompts is {prompts!r}: give a non-empty list of Prompt(description, anchors, seed)"
                )
            if description or len(anchors):
                raise InvalidRequestError(
                    "both a description (or anchors) and prompts were given: put every sound in prompts, or give "
                    "one description without prompts"
                )
            if video is not None:
                raise InvalidRequestError("a masked video prompts one sound: give it with a description, not prompts")
            for i, p in enumerate(prompts):
                if not isinstance(p, Prompt):
                    raise InvalidRequestError(f"prompts[{i}] is a {type(p).__name__}: give Prompt(description, ...)")
                if not isinstance(p.description, str):
                    kind = type(p.description).__name__
                    raise InvalidRequestError(f"prompts[{i}].description is a {kind}: give a str")
                if not _check_anchors(p.anchors) and not p.description.strip():
                    raise InvalidRequestError(
                        f"prompts[{i}] has an empty description and no anchors: describe the sound (e.g. 'vocals') "
                        "or mark where it is with anchors"
                    )
                if p.seed is not None and not _is_int(p.seed):
                    raise InvalidRequestError(f"prompts[{i}].seed is {p.seed!r}: give an integer, or None")
            description, anchors = prompts[0].description, prompts[0].anchors  # checked again below, harmlessly
        if total_frames is not None and (not _is_int(total_frames) or total_frames < 0):
            raise InvalidAudioError(
                f"total_frames is {total_frames!r}: give the stream's length in frames at its rate, or None if unknown"
            )
        if not _is_int(sample_rate) or sample_rate <= 0:
            raise InvalidAudioError(f"sample_rate is {sample_rate!r}: give the input's rate in Hz, a positive integer")
        sample_rate = int(sample_rate)
        taps = max(_resample_taps(sample_rate, model.sample_rate), _resample_taps(model.sample_rate, sample_rate))
        if taps > MAX_RESAMPLE_TAPS:
            raise InvalidAudioError(
                f"sample_rate {sample_rate} Hz shares only a factor of {math.gcd(sample_rate, model.sample_rate)} with "
                f"the model's {model.sample_rate} Hz: resampling would need a {taps}-tap kernel (at most "
                f"{MAX_RESAMPLE_TAPS}); resample the input to a standard rate such as 44100 or 48000 Hz first"
            )
        if not _is_int(channels) or channels <= 0:
            raise InvalidAudioError(f"channels is {channels!r}: give the input's channel count, a positive integer")
        if not isinstance(description, str):
            raise InvalidRequestError(f"description is a {type(description).__name__}: give a str")
        anchors = _check_anchors(anchors)
        if video is not None:
            if not isinstance(video, VideoPrompt):
                raise InvalidVideoError(
                    f"video is a {type(video).__name__}: give a VideoPrompt (VideoPrompt.from_frames or .from_file)"
                )
            if getattr(model, "vision_encoder", None) is None:
                raise InvalidRequestError(
                    "a masked video was given but the model was loaded without its vision encoder: load it with "
                    "SAMAudio.from_pretrained(..., vision=True)"
                )
        if not description.strip() and not anchors and video is None:
            raise InvalidRequestError(
                "the description is empty and there are no anchors: describe the sound to separate (e.g. 'a dog "
                "barking'), mark where it is with anchors, or give a masked video"
            )
        hop, rate = model.hop_length, model.sample_rate
        fps = rate / hop  # latent frames per second (25)
        limit = model.config.transformer.max_positions
        for name, value in (("chunk_seconds", chunk_seconds), ("overlap_seconds", overlap_seconds)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise InvalidRequestError(f"{name} is {value!r}: give a finite number of seconds")
            if value > limit / fps:  # checked before any arithmetic: 1e308 seconds would overflow into frames
                raise InvalidRequestError(
                    f"the DiT's position table holds {limit} frames ({limit / fps:g} s) and {name} is {value:g} s: "
                    f"give {name} <= {limit / fps:g}"
                )
        W = round(chunk_seconds * fps)
        V = round(overlap_seconds * fps)
        if V < 0:
            raise InvalidRequestError(f"overlap_seconds is {overlap_seconds}: give 0 or more seconds")
        if W <= V:
            raise InvalidRequestError(
                f"chunk_seconds {chunk_seconds} ({W} frames of {1000 / fps:g} ms) must be longer than overlap_seconds "
                f"{overlap_seconds} ({V} frames): windows must advance; e.g. chunk 10 s with overlap 2 s"
            )
        if W > limit:
            raise InvalidRequestError(
                f"chunk_seconds {chunk_seconds} is {W} latent frames but the DiT's position table holds {limit} "
                f"({limit / fps:g} s): give chunk_seconds <= {limit / fps:g}"
            )
        if not _is_int(seed):
            raise InvalidRequestError(f"seed is {seed!r}: give an integer")
        if ode_opt is not None and not isinstance(ode_opt, dict):
            raise InvalidRequestError(
                f"ode_opt is a {type(ode_opt).__name__}: give None or a dict like "
                "{'method': 'midpoint', 'options': {'step_size': 0.0625}}"
            )
        if not _is_int(max_batch) or max_batch < 1:
            raise InvalidRequestError(f"max_batch is {max_batch!r}: give a positive number of windows per model call")
        if not _is_int(candidates) or candidates < 1:
            raise InvalidRequestError(f"candidates is {candidates!r}: give 1 or more starting noises per window")
        # getattr: a worker's view of a model (a cluster front door) may hold no parts at all
        text, visual = getattr(model, "text_ranker", None), getattr(model, "visual_ranker", None)
        if candidates > 1 and text is None and (video is None or visual is None):
            raise PartNotLoadedError(
                f"{candidates} candidates need a ranker to choose among them, but the model was loaded without "
                f"{'a text' if video is None else 'a visual or text'} ranker: load one with "
                "SAMAudio.from_pretrained(..., text_ranker='judge' or 'clap'), or ask for 1 candidate"
            )
        if (predict_spans or span_gate) and getattr(model, "span_predictor", None) is None:
            raise PartNotLoadedError(
                "span prediction and the span gate need the PE-A-Frame span predictor, which the model was loaded "
                "without: load it with SAMAudio.from_pretrained(..., span_predictor='pe-a-frame-large' or a folder)"
            )
        if isinstance(span_threshold, bool) or not isinstance(span_threshold, numbers.Real) or not math.isfinite(
            span_threshold
        ):
            raise InvalidRequestError(f"span_threshold is {span_threshold!r}: give a frame probability, e.g. 0.3")
        return WindowPlan(frames=W, overlap=V, hop=hop, sample_rate=rate)

    @staticmethod
    def gate_default(model: "SAMAudio") -> bool:
        """The span gate is on by default exactly when the model has its span predictor."""
        return getattr(model, "span_predictor", None) is not None
    def _planned_for(self, plan: WindowPlan, total_frames: int) -> WindowPlan:
        """The plan for a stream of `total_frames` input frames: one window of its own length (whole latent frames)
        when it is shorter than a window, so a short selection costs its length (issue 17); else `plan`."""
        samples = -(-total_frames * plan.sample_rate // self.sample_rate)  # at 48 kHz, as the resampler makes them
        if samples >= plan.samples:
            return plan
        frames = max(1, -(-samples // plan.hop))
        return WindowPlan(frames=frames, overlap=0, hop=plan.hop, sample_rate=plan.sample_rate)

    def check_frames(self, frames: Any) -> np.ndarray:
        """A pushed block as (n, ch) float32 (a copy when converted), or a named error; changes no state."""
        arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
        if arr.ndim != 2 or arr.shape[1] != self.channels:
            raise InvalidAudioError(
                f"a block of shape {arr.shape} was pushed to a stream of {self.channels} channel(s): give "
                f"(frames, {self.channels}) arrays, frames interleaved as rows"
            )
        if arr.dtype.kind != "f":
            raise InvalidAudioError(
                f"a block of dtype {arr.dtype} was pushed: give float samples in [-1, 1], e.g. "
                "x.astype(np.float32) / 32768 for int16"
            )
        arr = arr.astype(np.float32, copy=False)
        # NaN compares false, so one min and one max (no temporaries) find NaN, inf and huge finite samples alike
        if arr.size and not (-MAX_SAMPLE <= arr.min() and arr.max() <= MAX_SAMPLE):
            bad_mask = ~(np.abs(arr) <= MAX_SAMPLE)
            bad = int(bad_mask.sum())
            first = int(np.argwhere(bad_mask)[0, 0])
            raise InvalidAudioError(
                f"a block of {arr.shape[0]} frames has {bad} sample(s) that are NaN, infinite or beyond "
                f"+-{MAX_SAMPLE:g}, the first at frame {self.frames_in + first} of the stream: samples are nominally "
                "in [-1, 1]; replace the NaN and infinite ones (e.g. with 0), scale the audio down, and send it again"
            )
        return arr

    # ------------------------------------------------------------------ the verbs

    def push(self, frames: np.ndarray) -> list[StemBlock]:
        """Add (n, ch) float32 frames (n may be 0); returns the stems that became final (0 or 1 block)."""
        self._check_open()
        block = self.check_frames(frames)
        if self.total_frames is not None and self.frames_in + block.shape[0] > self.total_frames:
            raise InvalidAudioError(
                f"a block of {block.shape[0]} frames would bring the stream to {self.frames_in + block.shape[0]} "
                f"frames, past its stated total of {self.total_frames}: state the stream's real length, or none"
            )
        with self._busy:
            self._check_open()
            try:
                pieces = self._slices(block.shape[0])
                out: list[torch.Tensor] = []
                for i, (a, b) in enumerate(pieces):
                    x = torch.from_numpy(block[a:b].T.copy())  # (ch, m), ours: never the caller's memory
                    self.frames_in += b - a
                    if not self._model_residual:
                        self._x.append(x)
                    self._append_y(self._up.push(x))
                    out += self._run(final=False, drain=i == len(pieces) - 1)
                return self._blocks(out, limit=None)
            except BaseException as e:
                self._fail(e)
                raise
            finally:
                self._after_call()

    def finish(self) -> list[StemBlock]:
        """Flush: the remaining stems; afterwards the blocks returned cover every frame pushed, exactly."""
        self._check_open()
        with self._busy:
            self._check_open()
            try:
                self._append_y(self._up.finish())
                out = self._run(final=True, drain=True)
                blocks = self._blocks(out, limit=self.frames_in)
                assert self._emitted == self.frames_in, (self._emitted, self.frames_in)
                self._close("finished")
                self._progress()
                return blocks
            except BaseException as e:
                self._fail(e)
                raise
            finally:
                self._after_call()

    def cancel(self) -> None:
        """Stop between windows; a push or finish in progress raises `CancelledError`, later ones
        `StreamClosedError`. Safe from any thread, idempotent."""
        self._cancelled.set()
        pending = self._pending
        if pending is not None:
            pending.cancel()  # a pool may drop a job not yet started
        if self._busy.acquire(blocking=False):
            try:
                if self._closed is None:
                    self._close("cancelled")
            finally:
                self._busy.release()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def held_samples(self) -> int:
        """Samples (per channel) held in the stream's buffers: bounded by a few windows, not by the stream."""
        return self._up.held + self._y_len + self._ola.length + self._down.held + sum(x.shape[-1] for x in self._x)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        why = self._closed or ("cancelled" if self._cancelled.is_set() else None)
        if why is not None:
            raise StreamClosedError(f"this stream is {why}: start a new StreamingSeparator")

    def _close(self, why: str) -> None:
        self._closed = why
        # free the buffers; the counters stay for summaries
        self._y = torch.zeros(0, 0)
        self._y_pieces, self._y_len = [], 0
        self._ola = OverlapAdd(0, 0)
        self._x = []
        for prompt in self._prompts:
            prompt.text = StreamText(prompt.description)  # the encoded features go with the old one
            prompt.noise = {}
        self._up = self._down = _StreamResampler(1, 1, 0)
        self.video = None

    def _fail(self, e: BaseException) -> None:
        if isinstance(e, CancelledError) or self._cancelled.is_set():
            self._close("cancelled")
        else:
            logger.warning("closing stream after %s: %s", type(e).__name__, e)
            self._close(f"closed after an error ({type(e).__name__})")

    def _after_call(self) -> None:
        self._pending = None
        if self._cancelled.is_set() and self._closed is None:
            self._close("cancelled")

    def _slices(self, n: int) -> list[tuple[int, int]]:
        """Split a push into pieces of about `max_batch` strides, so buffers stay bounded however large it is."""
        plan = self.plan
        per = max(1, -(-self.max_batch * plan.stride * plan.hop * self.sample_rate // plan.sample_rate))
        return [(a, min(n, a + per)) for a in range(0, n, per)] or [(0, 0)]

    def _append_y(self, y: torch.Tensor) -> None:
        # Pieces are kept as they come and joined once per window (_joined_y): joining on every push would copy
        # the whole buffer each time, quadratic in the pushes per window.
        if y.shape[-1]:
            self._y_pieces.append(y)
            self._y_len += y.shape[-1]

    def _joined_y(self) -> torch.Tensor:
        if self._y_pieces:
            self._y = torch.cat([self._y, *self._y_pieces], dim=-1)
            self._y_pieces = []
        return self._y

    def _run(self, *, final: bool, drain: bool) -> list[torch.Tensor]:
        """Separate the windows that can run now, stitch them, and return newly final output pieces (2ch, m)."""
        plan, out = self.plan, []
        y_end = self._y_start + self._y_len
        length = self._up.n_out  # 48 kHz samples known so far (all of them once final)
        while True:
            ready, k = [], self._next
            while len(ready) < self.max_batch and (
                plan.needed(k, length) if final else plan.start(k) + plan.samples <= y_end
            ):
                ready.append(k)
                k += 1
            if not ready or (not final and not drain and len(ready) < self.max_batch):
                break  # nothing to do, or wait for a full batch while a large push goes on
            if self._cancelled.is_set():
                raise CancelledError(f"stream cancelled before window {ready[0]}")
            stems = self._separate(ready)
            P = len(self._prompts)
            for i, k in enumerate(ready):
                self._stitch(k, stems[i * P : (i + 1) * P])
            self._next = ready[-1] + 1
            # stitched samples are final up to where the next window starts (or the end, once known)
            done = min(plan.start(self._next), length) if final else plan.start(self._next)
            out.append(self._down.push(self._ola.take(done)))
            self._drop_y(plan.start(self._next))
            self.frames_out = min(self._down.n_out, self.frames_in)
            self._progress()
        if final:
            if self._ola.start < length:
                out.append(self._down.push(self._ola.take(length)))
            out.append(self._down.finish())
            self.frames_out = self.frames_in
        return out

    def _separate(self, ks: list[int]) -> list[WindowStems]:
        """Stems of windows `ks`, all prompts of each in one submission: window-major, prompt-minor."""
        jobs = [job for k in ks for job in self._jobs(k)]
        self._evals_base = self.evaluations_done
        if self.on_step is not None:  # each job counts its own evaluations: a worker may split them over calls
            self._step_counts = [0] * len(jobs)
            for j, job in enumerate(jobs):
                job.on_step = functools.partial(self._step, j)
        future = self.worker.submit(jobs)
        self._pending = future
        if self._cancelled.is_set():  # cancel() may have looked for a pending future just before it was set
            future.cancel()
        try:
            stems = future.result()
        except concurrent.futures.CancelledError as e:
            raise CancelledError(f"stream cancelled while windows {ks[0]}..{ks[-1]} were pending") from e
        finally:
            self._pending = None
        if len(stems) != len(jobs):
            raise RuntimeError(f"worker returned {len(stems)} results for {len(jobs)} jobs")
        P = len(self._prompts)
        self.windows_done += len(ks)
        self.nfe += sum(s.nfe for s in stems[::P])  # a window's prompts share its model calls
        if self._evals_per_window is None and stems:
            self._evals_per_window = stems[0].nfe  # an adaptive solver: the first window's count stands for all
        self.evaluations_done = self._evals_base + sum(s.nfe for s in stems)
        for i, (job, s) in enumerate(zip(jobs, stems)):
            if s.gated:
                self.windows_gated += i % P == 0  # a window's prompts are gated together
                continue
            self.candidates_evaluated += job.candidates * job.audio.shape[0]
            if s.scores is not None and s.chosen is not None:
                self.chosen_scores += s.scores.gather(1, s.chosen.view(-1, 1)).view(-1).tolist()
        logger.debug("windows %d..%d separated (%d in one call)", ks[0], ks[-1], len(ks))
        return stems

    def _job(self, k: int) -> WindowJob:
        """Window k's job of the first prompt."""
        return self._jobs(k)[0]

    def _jobs(self, k: int) -> list[WindowJob]:
        """Window k's jobs, one per prompt, sharing its audio (and video frames)."""
        plan = self.plan
        a = plan.start(k) - self._y_start
        assert a >= 0, (k, plan.start(k), self._y_start)
        audio = self._joined_y()[:, a : a + plan.samples]
        if audio.shape[-1] < plan.samples:  # the last window: zeros to the full length, always the same way
            audio = torch.nn.functional.pad(audio, (0, plan.samples - audio.shape[-1]))
        audio = audio.clone()  # (ch, W*H)
        f0 = k * plan.stride
        video = None if self.video is None else self.video.window(f0, plan.frames, plan.hop, plan.sample_rate)
        jobs = []
        for prompt in self._prompts:
            jobs.append(
                WindowJob(
                    audio=audio,
                    text=prompt.text,
                    anchors=self._window_anchors(prompt, f0),
                    noise=self._candidate_noise(prompt, f0),  # (W, 2C), or (K, W, 2C)
                    watermark_message=prompt.message,
                    ode_opt=self.ode_opt,
                    index=k,
                    first_frame=f0,
                    masked_video=video,
                    should_stop=self._cancelled.is_set,
                    predict_spans=self.predict_spans,
                    span_gate=self.span_gate,
                    span_threshold=self.span_threshold,
                    decode_residual=self._model_residual,
                )
            )
        return jobs

    def _step(self, j: int, evaluations: int) -> None:
        """Job j of the running submission made its `evaluations`-th evaluation (on the worker's thread)."""
        self._step_counts[j] = evaluations
        self.evaluations_done = self._evals_base + sum(self._step_counts)
        self.on_step(self.evaluations_done, self.evaluations_planned)

    @property
    def evaluations_planned(self) -> int:
        """Evaluations the windows of the frames known so far need (all of the stream's, once its length is
        known), counted per prompt; 0 while an adaptive solver has not said how many a window takes."""
        n = self.total_frames if self.total_frames is not None else self.frames_in
        known = -(-n * self.plan.sample_rate // self.sample_rate)
        windows = max(self.plan.count(known), self.windows_done)
        return windows * len(self._prompts) * (self._evals_per_window or 0)

    def _candidate_noise(self, prompt: _PromptState, f0: int) -> torch.Tensor:
        """The window's starting noise for `prompt`: (W, 2C) for one candidate, (K, W, 2C) for K."""
        if self.candidates == 1:
            return self._window_noise(prompt, f0, 0)
        return torch.stack([self._window_noise(prompt, f0, c) for c in range(self.candidates)])  # (K, W, 2C)

    def _window_noise(self, prompt: _PromptState, f0: int, candidate: int) -> torch.Tensor:
        """frame_noise of the window at frame f0, reusing the rows the previous window already drew."""
        W = self.plan.frames
        last = prompt.noise.get(candidate)
        if last is not None and 0 < f0 - last[0] < W:
            prev_f0, prev = last
            kept = prev[f0 - prev_f0 :]  # (W - (f0 - prev_f0), 2C): rows are functions of (seed, c, frame) only
            fresh = frame_noise(prompt.seed, prev_f0 + W, W - kept.shape[0], self._width, candidate)
            noise = torch.cat([kept, fresh])
        else:
            noise = frame_noise(prompt.seed, f0, W, self._width, candidate)
        prompt.noise[candidate] = (f0, noise)
        return noise  # (W, 2C)

    def _window_anchors(self, prompt: _PromptState, f0: int) -> list[Anchor]:
        """Anchors clipped to frames [f0, f0 + W), in window seconds that the processor maps back to those frames."""
        plan = self.plan
        out = []
        for sign, s, e in prompt.anchor_frames:
            s, e = max(s - f0, 0), min(e - f0, plan.frames)
            if s < e:
                out.append((sign, _frame_seconds(s, plan), _frame_seconds(e, plan)))
        return out

    def _stitch(self, k: int, stems: Sequence[WindowStems]) -> None:
        """Window k's stems, one per prompt: the targets in order, then the first one's residual if it is used."""
        plan = self.plan
        parts = [s.target for s in stems] + ([stems[0].residual] if self._model_residual else [])
        for stem in parts:
            if stem.shape != (self.channels, plan.samples):
                raise RuntimeError(f"worker returned stems of shape {tuple(stem.shape)} for window {k}")
        self._ola.add(plan.start(k), [p.float() for p in parts], plan.weights(k))

    def _drop_y(self, upto: int) -> None:
        y = self._joined_y()
        n = min(max(0, upto - self._y_start), y.shape[-1])
        self._y = y[:, n:]
        self._y_start += n
        self._y_len -= n

    def _blocks(self, pieces: list[torch.Tensor], limit: int | None) -> list[StemBlock]:
        """Join output pieces (2ch, m) into one StemBlock; `limit` cuts at the stream's length when finishing."""
        pieces = [p for p in pieces if p.shape[-1]]
        if not pieces:
            return []
        z = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)  # (2ch, m)
        start = self._emitted
        if limit is not None:
            z = z[:, : max(0, limit - start)]
        if not z.shape[-1]:
            return []
        m = z.shape[-1]
        self._emitted = start + m
        ch, P = self.channels, len(self._prompts)
        rows = z.float().numpy()  # (rows, m): P x ch target rows, then ch residual rows if the model's is used
        # Interleaved by stacking whole rows: ~10x faster than copying a transposed view column-slice.
        targets = [np.stack(list(rows[p * ch : (p + 1) * ch]), axis=1) for p in range(P)]  # P x (m, ch)
        if self._model_residual:
            residual = np.stack(list(rows[P * ch :]), axis=1)  # (m, ch)
        else:
            mix = self._take_x(m).numpy().T  # (m, ch) the frames pushed, exactly
            if self.null_sum:
                targets, residual = null_sum_residual(mix, targets)
            else:  # several prompts: the mix minus the targets, without rounding them
                residual = (mix - np.sum(targets, axis=0, dtype=np.float64)).astype(np.float32)
        return [StemBlock(start=start, target=targets[0], residual=residual, targets=targets)]

    def _take_x(self, m: int) -> torch.Tensor:
        """The next m pushed frames (ch, m), dropped from the kept input."""
        x = torch.cat(self._x, dim=-1) if len(self._x) != 1 else self._x[0]
        assert x.shape[-1] >= m, (x.shape, m)
        self._x = [x[:, m:]] if x.shape[-1] > m else []
        return x[:, :m]

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(min(self.frames_out, self.frames_in), self.frames_in)


def _frame_seconds(j: int, plan: WindowPlan) -> float:
    """A time whose frame by the processor's rule, ceil(t * sr / hop), is exactly j (half a frame before it)."""
    return 0.0 if j == 0 else (j - 0.5) * plan.hop / plan.sample_rate
