"""Streaming separation: audio of any length, rate and channel count, separated in overlapping windows.

`SAMAudio.separate` takes a whole file in one pass: memory and time grow with the file (attention is
quadratic in frames) and nothing comes back until the end. `StreamingSeparator` takes audio in blocks of
any size and returns the stems that are final so far, holding only a few windows of state per stream.

    sep = StreamingSeparator(model, processor, "a dog barking", sample_rate=44100, channels=2)
    for frames in source:                      # (n, channels) float32, any n, 0 too
        for block in sep.push(frames):         # SeparatedBlock(start, target, residual)
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
  processor's rule (`ceil(t * 48000 / 1920)`, `processor.anchor_frame`) once per stream, clipped to each window
  and handed to its batch in frames (`Batch.set_anchor_frames`): no round trip through seconds. A window that
  no anchor reaches gets none. (`WindowJob.anchors` still reads them in window seconds, half a frame before
  each edge frame, so the processor's `ceil` finds exactly those frames again.)
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

Errors: bad arguments raise named errors (`samaudio.errors`) from the constructor or `StreamSettings.check`, before any
model work. A bad block in `push` (wrong shape or channel count, non-float, non-finite) is rejected whole
before it changes any state: the separator stays usable. An error from the model or the worker closes the
stream (later calls raise `StreamClosedError`), as `cancel()` does.

Legend: ch channels, n frames at the input rate, L samples at 48 kHz, W / V / S window / overlap / stride in
latent frames, H hop (samples per latent frame at 48 kHz), C codec latent channels, S_t text tokens,
Dt text feature width, N video frames, F video frames of one window (<= W), Hv x Wv video frame size.

Modules, one concept each: `plan` (where windows sit, frames and seconds), `noise` (starting noise and watermark
of absolute positions), `resample` (piecewise resampling), `input_buffer` (the 48 kHz input windows read),
`overlap_add` (stitching), `jobs` (a window's work unit, built from latent frames by plain functions, and the
worker interface), `batch` (jobs into model calls), `prompts` (several sounds, null-sum), `settings` (a stream's
checked request and its counts), `separator` (the stream). The masked video (`VideoPrompt`) lives beside the processor's video code.
"""

from samaudio.processor import VideoPrompt
from samaudio.streaming.batch import LocalWorker, separate_windows, window_batch
from samaudio.streaming.jobs import StreamText, WindowJob, WindowStems, WindowWorker
from samaudio.streaming.noise import frame_noise, watermark_bits
from samaudio.streaming.overlap_add import OverlapAdd
from samaudio.streaming.plan import WindowPlan
from samaudio.streaming.prompts import Prompt, check_sound, null_sum_residual
from samaudio.streaming.separator import Progress, SeparatedBlock, StreamingSeparator
from samaudio.streaming.settings import StreamCounters, StreamSettings

__all__ = [
    "StreamingSeparator",
    "SeparatedBlock",
    "StreamSettings",
    "StreamCounters",
    "Prompt",
    "null_sum_residual",
    "check_sound",
    "WindowJob",
    "StreamText",
    "WindowStems",
    "WindowWorker",
    "LocalWorker",
    "WindowPlan",
    "OverlapAdd",
    "VideoPrompt",
    "Progress",
    "frame_noise",
    "watermark_bits",
    "separate_windows",
    "window_batch",
]
