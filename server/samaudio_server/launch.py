"""`samaudio-server` on any install.

Wheels cannot make a console script depend on an extra, so `samaudio-server` is installed everywhere and starts
here: with the `[server]` extra it runs the server's command line (`main.py`), without it it says how to get the
extra and exits 2 (usage), instead of failing on the first missing import. Nothing of the server stack is imported
before the check (the package's `__init__` imports lazily for the same reason).
"""

from __future__ import annotations

import sys

from samaudio.install import SERVER_EXTRA, missing_server_modules


def main(argv: list[str] | None = None) -> None:
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
