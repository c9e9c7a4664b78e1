"""samaudio-server: the gRPC front door of samaudio (`samaudio.v1.SeparationService`).

A thin adapter over the library: the servicer unpacks requests, drives `samaudio.streaming.StreamingSeparator`
and packs its stem blocks; model calls run on one worker thread that owns the device and batches windows
across streams. `create_server` builds a ready-to-start server; `samaudio-server` (`launch.py`, then `main.py`)
is the CLI. The names below are imported on first use, so that `launch` can run on an install without the
server stack and say what is missing.
"""

from typing import Any

__all__ = ["SeparationServer", "create_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from samaudio_server import server

        return getattr(server, name)
    raise AttributeError(f"module 'samaudio_server' has no attribute {name!r}")
