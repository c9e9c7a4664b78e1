"""The server `samaudio demo` separates through, started in the demo's own process on a free loopback port.

It serves the trained `samaudio-demo` model that ships with samaudio (trained by `samaudio.train` on its
synthetic sound classes); on an install without those weights, the untrained `demo-tiny` preset, which shows
that the path works but does not separate. The client's demo (samaudio_client.demo) imports this module only
when the server stack is installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from samaudio.defaults import StreamDefaults
from samaudio.model import catalog
from samaudio_server.server import create_server

log = logging.getLogger(__name__)

TRAINED = "samaudio-demo"
UNTRAINED = "demo-tiny"
# demo-tiny's windows are short so that a few of them cover the example and the demo streams and crossfades as a
# real run does; the trained model keeps the engine's defaults.
UNTRAINED_DEFAULTS = StreamDefaults(chunk_seconds=2.0, overlap_seconds=0.5)


@dataclass
class DemoServer:
    server: Any  # grpc.Server, started
    port: int
    model_name: str
    trained: bool

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


def start_demo_server() -> DemoServer:
    """Load the demo model (trained when shipped, else untrained) and serve it on 127.0.0.1, a free port."""
    # Models this small gain little from intra-op threads, and lose much when the cores are busy elsewhere
    # (threads wait for each other at every op).
    torch.set_num_threads(1)
    known = catalog.find(TRAINED)
    trained = known is not None and known.trained
    if trained:
        model, processor = catalog.load(TRAINED, device="cpu")
        name, defaults = TRAINED, StreamDefaults()
    else:
        model, processor = catalog.build_untrained(UNTRAINED, seed=0)
        name, defaults = f"{UNTRAINED}-untrained", UNTRAINED_DEFAULTS
    server, port = create_server("127.0.0.1:0", model=model, processor=processor, model_name=name, defaults=defaults)
    server.start()
    log.info("demo server for %s on 127.0.0.1:%d", name, port)
    return DemoServer(server, port, name, trained)
