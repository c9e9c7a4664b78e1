"""Every error a stream can end with, mapped to its gRPC status code in ONE table.

Library errors come from `samaudio.errors`; the conditions only a server has (request order, limits, draining,
tokens) are the classes below. Codes keep the meanings of googleapis `google/rpc/code.proto`:
INVALID_ARGUMENT the request is wrong whatever the server's state; FAILED_PRECONDITION the server is in no state
to run it; RESOURCE_EXHAUSTED a limit was hit; UNAVAILABLE retry later or elsewhere; UNAUTHENTICATED no or a
wrong token.
"""

from __future__ import annotations

import concurrent.futures

import grpc

from samaudio.errors import (
    CancelledError,
    CheckpointError,
    ConfigError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    InvalidVideoError,
    ModelUnavailableError,
    PartNotLoadedError,
    SAMAudioError,
    StreamClosedError,
    VideoTooLargeError,
)


class ServingError(SAMAudioError):
    """A condition only the server has: the request stream's order, its limits, its state, its tokens."""


class ProtocolError(ServingError):
    """Requests out of order: no config first, a second config, audio that is not a whole number of frames."""


class TooManyStreamsError(ServingError):
    """The server already runs `--max-streams` streams."""


class StreamTooLongError(ServingError):
    """A stream sent more than `--max-seconds` of audio."""


class UnparseableRequestError(ProtocolError):
    """A request message that does not parse as its protobuf type (random bytes, invalid UTF-8 in a string)."""


class AudioTimeoutError(ServingError):
    """A stream waited for the client's audio longer than the audio it sent plus `audio_timeout_seconds`."""


class DrainingError(ServingError):
    """The server is shutting down: it finishes the streams it has and takes no new ones."""


class WorkerClosedError(ServingError):
    """The device worker was shut down (the server is stopping) before a window could run."""


class ClusterBusyError(ServingError):
    """Every replica of the cluster backend is busy and their queues are full (Serve's backpressure)."""


class ClusterUnavailableError(ServingError):
    """The cluster backend cannot start: Ray is not installed, or no cluster answers at the address."""


class VisionUnavailableError(ServingError):
    """A masked video was sent but the served model was loaded without its vision encoder (no `--vision`)."""


class PartUnavailableError(ServingError):
    """A stream asks for candidates, span prediction or the span gate, and the server was started without the
    ranker or span predictor they need (`--text-ranker`, `--visual-ranker`, `--span-predictor`)."""


class UnauthenticatedError(ServingError):
    """The server needs `authorization: Bearer <token>` metadata and got none or a wrong one."""


# The one table. Looked up along the exception's MRO, so a subclass inherits its parent's code.
STATUS_CODES: dict[type[BaseException], grpc.StatusCode] = {
    ProtocolError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidAudioError: grpc.StatusCode.INVALID_ARGUMENT,  # rate, channels, non-finite samples
    InvalidAnchorError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,  # empty description, chunk <= overlap, unknown model
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidVideoError: grpc.StatusCode.INVALID_ARGUMENT,  # sizes, frame counts, masks that do not fit; bad files
    VideoTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,  # more than max_video_bytes, as sent or decoded
    TooManyStreamsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StreamTooLongError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ClusterBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,  # retry later: the replicas' queues are full
    ClusterUnavailableError: grpc.StatusCode.UNAVAILABLE,
    AudioTimeoutError: grpc.StatusCode.OUT_OF_RANGE,  # as Google Speech: "Long duration elapsed without audio"
    DrainingError: grpc.StatusCode.UNAVAILABLE,
    WorkerClosedError: grpc.StatusCode.UNAVAILABLE,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    CheckpointError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,
    StreamClosedError: grpc.StatusCode.FAILED_PRECONDITION,
    VisionUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,  # the model is served without --vision
    PartUnavailableError: grpc.StatusCode.FAILED_PRECONDITION,  # served without the ranker / span predictor asked for
    PartNotLoadedError: grpc.StatusCode.FAILED_PRECONDITION,  # the library's side of the same condition
    CancelledError: grpc.StatusCode.CANCELLED,  # the client went away; the status only reaches logs
    concurrent.futures.CancelledError: grpc.StatusCode.CANCELLED,
}


def status_code(error: BaseException) -> grpc.StatusCode:
    """The status code a stream ends with for `error`; INTERNAL for anything not in the table (a bug of ours)."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


QUOTE_CHARS = 64  # untrusted text quoted in a status or a log line keeps this many characters


def quoted(text: str | bytes, limit: int = QUOTE_CHARS) -> str:
    """`repr` of client-sent text, cut to `limit` characters with the full length said: a status or log line never
    carries a client's megabytes (issue 19)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
