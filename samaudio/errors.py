"""Named errors of the samaudio library.

Every error a caller can cause derives from `SAMAudioError`, so a server or a CLI can catch the library's
errors in one place and map each class to its own status code (see `server/samaudio_server/errors.py`).
Messages give the numbers and the fix. Asserts guard only our own invariants.
"""


class SAMAudioError(Exception):
    """Base class of every error the library raises on bad input or a missing resource."""


class ConfigError(SAMAudioError, ValueError):
    """A config dict or `config.json` has an unknown key, a missing value or inconsistent sizes."""


class CheckpointError(SAMAudioError):
    """A checkpoint is missing, unreadable, or its keys and shapes do not fit the model."""


class ModelUnavailableError(SAMAudioError):
    """A model cannot be had here: a gated or missing hub repo, or offline without a local copy."""


class InvalidAudioError(SAMAudioError, ValueError):
    """Audio that cannot be separated: empty, non-finite, wrong rank, channel count or sample rate."""


class InvalidAnchorError(SAMAudioError, ValueError):
    """A span prompt (anchor) with an unknown sign, a negative time or start >= end."""


class InvalidRequestError(SAMAudioError, ValueError):
    """Arguments that do not fit together: counts that differ, chunk <= overlap, an empty description."""


class PartNotLoadedError(InvalidRequestError):
    """A request needs a part the model was loaded without: a ranker (candidates > 1) or the span predictor."""


class StreamClosedError(SAMAudioError):
    """A stream was used after `finish()` or `cancel()`."""


class CancelledError(SAMAudioError):
    """A stream was cancelled while a window was pending."""


class StoppedError(CancelledError):
    """`SAMAudio.separate` stopped between two solver steps because its `should_stop()` turned true (the
    caller went away): the work done so far is dropped."""


class InvalidVideoError(InvalidRequestError):
    """A masked video that cannot be used: an undecodable file, a wrong shape, masks that do not fit the frames."""


class VideoTooLargeError(InvalidVideoError):
    """A video whose bytes, as sent or decoded, exceed the caller's bound (a server's `max_video_bytes`)."""
