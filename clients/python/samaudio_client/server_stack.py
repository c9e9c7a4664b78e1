"""Whether this install has the server stack (the `[server]` extra), and `samaudio-server` on any install.

The thin install (`pip install samaudio`) is the client for a DAW laptop: no torch, no model, no server. Wheels
cannot make a console script depend on an extra, so `samaudio-server` is installed everywhere and starts here:
with the extra it runs the server, without it it says how to get the extra and exits 2 (usage), instead of
failing on the first missing import.
"""

from __future__ import annotations

import importlib.util
import sys

SERVER_EXTRA = 'pip install "samaudio[server]"'
# What the model and the server import beyond the thin install's own dependencies (pyproject's [server] extra).
SERVER_MODULES = ("torch", "torchaudio", "torchdiffeq", "grpc_health", "grpc_reflection", "samaudio_server")


def missing_server_modules() -> list[str]:
    """The server stack's top-level modules this install lacks ([] with the `[server]` extra)."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> None:
    """`samaudio-server`: the server's command line, or exit 2 with the install command on a thin install."""
    missing = missing_server_modules()
    if missing:
        print(
            f"samaudio-server: this install has the client only (it lacks {', '.join(missing)}); serving needs "
            f"the model stack: {SERVER_EXTRA}",
            file=sys.stderr,
        )
        sys.exit(2)
    from samaudio_server.main import main as serve

    serve(argv)


if __name__ == "__main__":
    main()
