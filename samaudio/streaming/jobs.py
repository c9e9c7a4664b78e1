"""Work units: what the model needs to separate one window of one stream, what comes back, and who runs them.

Legend: ch channels, W latent frames per window, H hop (samples per latent frame at 48 kHz), C codec latent
channels, K candidates, S_t text tokens, Dt text feature width, F video frames of one window (<= W), Hv x Wv
video frame size.
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from samaudio.model.span_predictor import DEFAULT_THRESHOLD
from samaudio.processor import Anchor, FrameAnchor, VideoPrompt
from samaudio.streaming.noise import frame_noise
from samaudio.streaming.plan import WindowPlan, frame_seconds

if TYPE_CHECKING:
    from samaudio.model.model import SAMAudio

NoiseRows = tuple[int, torch.Tensor]  # (first latent frame, (W, 2C) noise) of a window



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

    audio: torch.Tensor  # (ch, W*H) float32 at 48 kHz, CPU; zero-padded to the full window; checked by the stream
    text: StreamText  # the stream's description, encoded by the worker on first use
    # (sign, start, end) latent frames of this window, [start, end) within [0, W); [] when no anchor reaches it
    anchor_frames: list[FrameAnchor]
    noise: torch.Tensor  # (W, 2C) float32 starting noise shared by the window's channels; (K, W, 2C) for K > 1
    watermark_message: torch.Tensor  # (2, 16) float bits: row 0 target, row 1 residual
    plan: WindowPlan  # the stream's windows: this one is `index`, from latent frame `first_frame`
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
    # Names this window's audio: equal for the jobs (prompts) of one window of one stream, unique otherwise. The
    # audio is encoded once for all jobs that share it, also when each reaches the model as its own copy (a
    # cluster replica unpickles every job apart). None: jobs share an encode only when they share the tensor.
    mixture: str | None = None

    @property
    def description(self) -> str:
        return self.text.description

    @property
    def anchors(self) -> list[Anchor]:
        """The anchors in window seconds, half a frame before each edge frame (the processor maps them back)."""
        return [(sign, frame_seconds(s, self.plan), frame_seconds(e, self.plan)) for sign, s, e in self.anchor_frames]

    @property
    def candidates(self) -> int:
        """K: starting noises the window is solved from (a ranker keeps one per channel)."""
        return self.noise.shape[0] if self.noise.dim() == 3 else 1


# ----------------------------------------------------------------------------------------------------------
# A window's part of the stream's prompts: functions of absolute latent frames only


def window_anchors(anchor_frames: Sequence[FrameAnchor], first_frame: int, frames: int) -> list[FrameAnchor]:
    """Anchors in absolute latent frames clipped to the window [first_frame, first_frame + frames), in the
    window's frames; [] when none reaches it."""
    out = []
    for sign, s, e in anchor_frames:
        s, e = max(s - first_frame, 0), min(e - first_frame, frames)
        if s < e:
            out.append((sign, s, e))
    return out


def window_noise(
    seed: int, first_frame: int, plan: WindowPlan, width: int, candidate: int, previous: NoiseRows | None
) -> torch.Tensor:
    """`frame_noise` of the window from `first_frame`: (W, 2C), reusing the rows `previous` (the stream's last
    window's (first_frame, noise)) already drew; rows are functions of (seed, candidate, frame) only."""
    W = plan.frames
    if previous is not None and 0 < first_frame - previous[0] < W:
        prev_f0, prev = previous
        kept = prev[first_frame - prev_f0 :]  # (W - (first_frame - prev_f0), 2C)
        fresh = frame_noise(seed, prev_f0 + W, W - kept.shape[0], width, candidate)
        return torch.cat([kept, fresh])  # (W, 2C)
    return frame_noise(seed, first_frame, W, width, candidate)  # (W, 2C)


def window_video(video: VideoPrompt | None, first_frame: int, plan: WindowPlan) -> torch.Tensor | None:
    """The masked frames of the window's latent frames: (F, 3, Hv, Wv), F <= W; None without a video."""
    return None if video is None else video.window(first_frame, plan.frames, plan.hop, plan.sample_rate)


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

