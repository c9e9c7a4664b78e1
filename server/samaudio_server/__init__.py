"""samaudio-server: the gRPC front door of samaudio (`samaudio.v1.SeparationService`).

A thin adapter over the library: the servicer unpacks requests, drives `samaudio.streaming.StreamingSeparator`
and packs its stem blocks; model calls run on one worker thread that owns the device and batches windows
across streams. `create_server` builds a ready-to-start server; `samaudio-server` (`main.py`) is the CLI.
"""

from samaudio_server.server import SeparationServer, create_server

__all__ = ["SeparationServer", "create_server"]
