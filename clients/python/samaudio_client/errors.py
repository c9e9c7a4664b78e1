"""The client's errors: one base class, and one class for whatever the server (or the way to it) says."""

from __future__ import annotations

import grpc

__all__ = ["SamaudioError", "ServerError"]


class SamaudioError(Exception):
    """Base class of every error the samaudio client raises."""


class ServerError(SamaudioError):
    """A call ended with a gRPC status other than OK.

    `code` is the `grpc.StatusCode` (google/rpc/code.proto meanings; the protocol lists which input gives
    which code), `message` the server's own words, which say what to change.
    """

    def __init__(self, code: grpc.StatusCode, message: str, target: str = "") -> None:
        self.code = code
        self.message = message
        self.target = target
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" from {self.target}" if self.target else ""
        return f"{self.code.name}{where}: {self.message}"

    @classmethod
    def from_rpc(cls, err: grpc.RpcError, target: str = "", tries: int = 1) -> ServerError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = (err.details() if hasattr(err, "details") else None) or str(err)
        if code == grpc.StatusCode.UNAVAILABLE and tries > 1:
            message = f"{message} (gave up after {tries} tries; is the server running at {target}?)"
        return cls(code, message, target)
