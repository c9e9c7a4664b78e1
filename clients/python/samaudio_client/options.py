"""Command-line options shared by `samaudio separate`, `samaudio info` and `samaudio osc`: the connection and
the stream settings, their parsers, and the settings as `SeparationOptions` fields.

One module that the commands import, so that no command imports another for its options. Unset stream
settings stay unset: the server fills in its own defaults (which it reports), `--local` the library's
(`samaudio.defaults`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samaudio.defaults import DEFAULT_PORT, STREAM_DEFAULTS

DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a time >= 0 s."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time in seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a time >= 0 s")
    return value


def add_connection(p: argparse.ArgumentParser, server: Any = None) -> None:
    """--server (into `server`, a mutually exclusive group, when given), --token, --tls, --tls-ca."""
    (server or p).add_argument(
        "--server",
        default=os.environ.get("SAMAUDIO_SERVER", DEFAULT_SERVER),
        metavar="HOST:PORT",
        help=f"the samaudio server; a HOST alone means port {DEFAULT_PORT} (default: $SAMAUDIO_SERVER or %(default)s)",
    )
    p.add_argument(
        "--token", default=os.environ.get("SAMAUDIO_TOKEN"), help="the server's token (default: $SAMAUDIO_TOKEN)"
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's roots")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="connect with TLS, trusting this PEM certificate")


def add_stream_settings(p: argparse.ArgumentParser) -> None:
    """--chunk-seconds, --overlap-seconds, --seed, --steps, --null-sum; unset means the server's (or the library's)
    default."""
    d = STREAM_DEFAULTS
    p.add_argument(
        "--chunk-seconds",
        type=positive(float),
        metavar="S",
        help=f"model window length (default: the server's, {d.chunk_seconds:g} unless it sets another)",
    )
    p.add_argument(
        "--overlap-seconds",
        type=seconds,
        metavar="S",
        help=f"overlap of neighbouring windows, < the window (default: the server's, {d.overlap_seconds:g} unless "
        "it sets another)",
    )
    p.add_argument("--seed", type=int, help=f"seed of the solver's initial noise (default: {d.seed})")
    p.add_argument(
        "--steps",
        type=positive(int),
        metavar="N",
        help=f"ODE solver steps (default: the server's, {d.solver_steps} unless it sets another)",
    )
    p.add_argument(
        "--null-sum",
        action="store_true",
        help="make the residual the input minus the other stems, so that the stems sum back to the input",
    )


def add_quality_settings(p: argparse.ArgumentParser) -> None:
    """--candidates, --predict-spans, --span-gate / --no-span-gate: the quality path (needs the server's parts)."""
    p.add_argument(
        "--candidates",
        type=positive(int),
        metavar="K",
        help=f"solve each window from K noises and keep the one the server's ranker scores best; about K times the "
        f"work, and K > 1 needs a server with a text ranker (samaudio info) (default: {STREAM_DEFAULTS.candidates})",
    )
    p.add_argument(
        "--predict-spans",
        action="store_true",
        default=None,
        help="prompt each window with the spans where the server's span predictor hears the sound (needs a server "
        "with a span predictor)",
    )
    p.add_argument(
        "--span-gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="silence the target of windows where the span predictor hears nothing, the residual keeps the mix "
        "(default: on when the server has a span predictor)",
    )


def stream_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The stream settings given on the command line, as `SeparationOptions` fields (unset ones left out)."""
    settings = {
        "chunk_seconds": args.chunk_seconds,
        "overlap_seconds": args.overlap_seconds,
        "seed": args.seed,
        "solver_steps": args.steps,
        "candidates": getattr(args, "candidates", None),
        "predict_spans": getattr(args, "predict_spans", None),
        "span_gate": getattr(args, "span_gate", None),
        "null_sum": args.null_sum or None,
    }
    return {k: v for k, v in settings.items() if v is not None}
