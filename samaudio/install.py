"""What this install has: the thin client alone (`pip install samaudio`, no torch) or the model and server stack
(the `[server]` extra). Imports nothing of either stack: the client's `--local` and `demo` and the
`samaudio-server` script ask here before they import the stack.
"""

from __future__ import annotations

import importlib.util

SERVER_EXTRA = 'pip install "samaudio[server]"'
# What the model and the server import beyond the thin install's own dependencies (pyproject's [server] extra).
SERVER_MODULES = ("torch", "torchaudio", "torchdiffeq", "grpc_health", "grpc_reflection", "samaudio_server")


def missing_server_modules() -> list[str]:
    """The server stack's top-level modules this install lacks ([] with the `[server]` extra)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
