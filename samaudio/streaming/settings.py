"""A stream's request, checked once (`StreamSettings`), and the counts it reports (`StreamCounters`).

`StreamSettings.check` is the one owner of a stream's arguments: it names them, resolves their defaults, checks
them before any model work and fits the window plan to a stream of known length; `StreamingSeparator` passes its
arguments through and only reads the settings afterwards. The counters are
what a stream's summary reports; the server reads them after the stream ends (issue 15).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from samaudio.defaults import STREAM_DEFAULTS
from samaudio.errors import InvalidAudioError, InvalidRequestError, InvalidVideoError, PartNotLoadedError
from samaudio.model.span_predictor import DEFAULT_THRESHOLD
from samaudio.processor import Anchor, VideoPrompt
from samaudio.streaming.plan import WindowPlan
from samaudio.streaming.prompts import Prompt, check_anchors, check_sound
from samaudio.streaming.resample import MAX_RESAMPLE_TAPS, resample_taps

if TYPE_CHECKING:
    from samaudio.model.model import SAMAudio


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _planned_for(plan: WindowPlan, total_frames: int, sample_rate: int) -> WindowPlan:
    """The plan for a stream of `total_frames` input frames at `sample_rate`: one window of its own length (whole
    latent frames) when it is shorter than a window, so a short selection costs its length (issue 17); else `plan`."""
    samples = -(-total_frames * plan.sample_rate // sample_rate)  # at 48 kHz, as the resampler makes them
    if samples >= plan.samples:
        return plan
    frames = max(1, -(-samples // plan.hop))
    return WindowPlan(frames=frames, overlap=0, hop=plan.hop, sample_rate=plan.sample_rate)


def span_gate_default(model: "SAMAudio") -> bool:
    """The span gate is on by default exactly when the model has its span predictor."""
    return getattr(model, "span_predictor", None) is not None


@dataclass(frozen=True)
class StreamSettings:
    """What a stream was asked to do, checked: never changed after the constructor."""

    prompts: tuple[Prompt, ...]  # every sound to separate, in order; one for a plain description (and anchors)
    sample_rate: int  # the input's rate in Hz (the stems come back at it)
    channels: int
    seed: int  # seeds the starting noise and watermark of prompts that give none
    ode_opt: dict[str, Any] | None  # the solver, as `SAMAudio.separate` takes it; None for the official one
    max_batch: int  # windows handed to the worker at once: bounds the buffers and how far the stream runs ahead
    candidates: int  # starting noises per window, one kept by a ranker
    predict_spans: bool  # anchors from the span predictor for windows without any
    span_gate: bool  # skip windows in which the span predictor finds no active frame
    span_threshold: float  # frame probability above which the span predictor calls a frame active
    null_sum: bool  # targets and residual sum to the input exactly
    residual: bool  # whether the caller takes a residual (without one the model decodes the target alone)
    total_frames: int | None  # the stream's length at its rate, when known
    plan: WindowPlan  # the windows: one window of the stream's own length when it is shorter than a window

    @property
    def model_residual(self) -> bool:
        """The model's residual is used for one prompt; with several (or null-sum), or none taken, the residual is
        the mix minus the targets, made at the input rate from the frames pushed."""
        return len(self.prompts) == 1 and not self.null_sum and self.residual

    @classmethod
    def check(
        cls,
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
        null_sum: bool = False,
        total_frames: int | None = None,
        residual: bool = True,
    ) -> "StreamSettings":
        """Check a stream's arguments without model work: named errors with the numbers and the fix.

        Returns the stream's settings, defaults resolved; their window plan is one window of the stream's own
        length for a `total_frames` shorter than a window. Times are rounded to whole latent frames (40 ms at
        48 kHz).
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
                check_sound(p.description, check_anchors(p.anchors), where=f"prompts[{i}]")
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
        taps = max(resample_taps(sample_rate, model.sample_rate), resample_taps(model.sample_rate, sample_rate))
        if taps > MAX_RESAMPLE_TAPS:
            raise InvalidAudioError(
                f"sample_rate {sample_rate} Hz shares only a factor of {math.gcd(sample_rate, model.sample_rate)} with "
                f"the model's {model.sample_rate} Hz: resampling would need a {taps}-tap kernel (at most "
                f"{MAX_RESAMPLE_TAPS}); resample the input to a standard rate such as 44100 or 48000 Hz first"
            )
        if not _is_int(channels) or channels <= 0:
            raise InvalidAudioError(f"channels is {channels!r}: give the input's channel count, a positive integer")
        anchors = check_anchors(anchors)
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
        check_sound(description, anchors, video=video is not None)
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
        plan = WindowPlan(frames=W, overlap=V, hop=hop, sample_rate=rate)
        return cls(
            prompts=tuple(prompts) if prompts is not None else (Prompt(description, tuple(anchors)),),
            sample_rate=sample_rate,
            channels=int(channels),
            seed=int(seed),
            ode_opt=ode_opt,
            max_batch=int(max_batch),
            candidates=int(candidates),
            predict_spans=bool(predict_spans),
            span_gate=span_gate_default(model) if span_gate is None else bool(span_gate),
            span_threshold=float(span_threshold),
            null_sum=bool(null_sum),
            residual=bool(residual),
            total_frames=None if total_frames is None else int(total_frames),
            plan=plan if total_frames is None else _planned_for(plan, int(total_frames), sample_rate),
        )


@dataclass
class StreamCounters:
    """A stream's counts for its summary: they stay after the stream closes."""

    frames_in: int = 0  # frames pushed, at the input rate
    frames_out: int = 0  # frames whose stems are final (returned, or returned by this call)
    windows_done: int = 0
    nfe: int = 0  # vector-field evaluations summed over windows (a window's prompts share its model calls)
    evaluations_done: int = 0  # vector-field evaluations made for this stream, counted per prompt
    windows_gated: int = 0  # windows the span gate found silent (no model call)
    candidates_evaluated: int = 0  # candidate solutions solved, over windows and channels
    # the kept candidate's ranker score, per ranked window and channel
    chosen_scores: list[float] = field(default_factory=list)
