"""The client's errors: `ClientError` the base class, `CallError` for a call the server (or the way to it) ended.

The server has its own error classes (`samaudio_server.errors`) and the library its own (`samaudio.errors`,
`SAMAudioError`); on this side every one of them arrives as a `CallError` with its gRPC status code.
"""

from __future__ import annotations

import grpc

__all__ = ["ClientError", "CallError", "connection_failure"]


class ClientError(Exception):
    """Base class of every error the samaudio client raises."""


# What gRPC core says when a connection fails, by the cause a user can act on (the details of an UNAVAILABLE
# status that no server wrote). Only "refused" is worth a retry: nothing listens yet (a server starting or
# restarting); a TLS mismatch or an unknown host fails the same way every time.
CONNECTION_FAILURES = {
    # nothing listens yet, or a server still starting: it accepted the connection but has not spoken
    "refused": ("Connection refused", "timed out before receiving SETTINGS frame"),
    "tls_required": ("Socket closed",),  # a plaintext client to a TLS server: it closes the connection
    "not_tls": ("WRONG_VERSION_NUMBER",),  # a TLS client to a plaintext server
    "hostname": ("Hostname Verification Check failed", "not in peer certificate"),
    "untrusted": ("CERTIFICATE_VERIFY_FAILED",),
    "unknown_host": ("DNS resolution failed", "errors resolving"),
}
_ADVICE = {
    "refused": "is the server running at {target}?",
    "tls_required": "the server at {target} closed the connection during setup: it may serve TLS only; connect "
    "with TLS, trusting its certificate",
    "not_tls": "the TLS handshake failed: the server at {target} does not seem to serve TLS; connect without TLS",
    "hostname": "the server's certificate does not name the host {host}: connect with a name its subjectAltName "
    "lists, or give the server a certificate whose subjectAltName names {host}",
    "untrusted": "the server's certificate is not trusted: trust its certificate (or the CA that signed it)",
    "unknown_host": "the host {host} is unknown: check its name",
}


def _host(target: str) -> str:
    """`host:port` -> host; `[::1]:50051` -> ::1."""
    if target.startswith("[") and "]" in target:
        return target[1 : target.index("]")]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


def connection_failure(code: grpc.StatusCode, details: str) -> str:
    """The cause of a failed connection (a key of CONNECTION_FAILURES), or "" for a status a server sent."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return ""
    return next((cause for cause, marks in CONNECTION_FAILURES.items() if any(m in details for m in marks)), "")


class CallError(ClientError):
    """A call ended with a gRPC status other than OK.

    `code` is the `grpc.StatusCode` (google/rpc/code.proto meanings; the protocol lists which input gives
    which code), `message` the server's own words, which say what to change; when no connection was made,
    `cause` names why (a key of CONNECTION_FAILURES: "refused", "tls_required", ...) and the message says what to do.
    """

    def __init__(self, code: grpc.StatusCode, message: str, target: str = "", cause: str = "") -> None:
        self.code = code
        self.message = message
        self.target = target
        self.cause = cause
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" from {self.target}" if self.target else ""
        return f"{self.code.name}{where}: {self.message}"

    @classmethod
    def from_rpc(cls, err: grpc.RpcError, target: str = "", tries: int = 1) -> CallError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else None) or str(err)
        cause = connection_failure(code, message)
        if cause:
            advice = _ADVICE[cause].format(target=target, host=_host(target))
            if tries > 1:
                advice += f"; gave up after {tries} tries"
            message = f"{message} ({advice})"
        return cls(code, message, target, cause)


# The names these classes were exported under before; code that catches them keeps working.
SamaudioError = ClientError
ServerError = CallError
