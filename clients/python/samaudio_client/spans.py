"""Span prompts and regions of a file, as the command line writes them.

A span says where in time the wanted sound is (`+`) or is not (`-`): `+1.2:3.4` means "the target sounds
between 1.2 s and 3.4 s", `-5:6` "it is silent between 5 s and 6 s". Spans are on the timeline of the source
they come with: the file's when a file is separated (so they stay right when `--start` picks a region), the
array's when an array is. `to_region` moves them onto a region's own timeline, which is what the server sees.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from samaudio_client.errors import ClientError

__all__ = ["Span", "SpanError", "SPAN_FORM", "parse_span", "as_span", "to_region"]

SPAN_FORM = "SIGN START:END in seconds, SIGN '+' (the sound is there) or '-' (it is not), e.g. +1.2:3.4 or -5:6"

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SPAN = re.compile(rf"^\s*([+-])\s*{_NUMBER}\s*:\s*{_NUMBER}\s*$")


class SpanError(ClientError, ValueError):
    """A span that cannot be read or does not fit the audio it comes with."""


@dataclass(frozen=True)
class Span:
    sign: str  # "+" the target is present in [start, end), "-" it is absent
    start_seconds: float
    end_seconds: float

    def __post_init__(self) -> None:
        if self.sign not in ("+", "-"):
            raise SpanError(f"span sign {self.sign!r} is neither '+' nor '-'; expected {SPAN_FORM}")
        for name, value in (("start", self.start_seconds), ("end", self.end_seconds)):
            if not math.isfinite(value) or value < 0:
                raise SpanError(f"span {name} {value} s must be a finite time >= 0; expected {SPAN_FORM}")
        if self.end_seconds <= self.start_seconds:
            raise SpanError(
                f"span {self} ends at {self.end_seconds} s, not after its start {self.start_seconds} s; "
                f"swap the times or widen it (expected {SPAN_FORM})"
            )

    def __str__(self) -> str:
        return f"{self.sign}{self.start_seconds:g}:{self.end_seconds:g}"


def parse_span(text: str) -> Span:
    """`"+1.2:3.4"` -> `Span("+", 1.2, 3.4)`; anything else raises `SpanError` naming the expected form."""
    match = _SPAN.match(text)
    if match is None:
        raise SpanError(f"cannot read span {text!r}: expected {SPAN_FORM}")
    sign, start, end = match.groups()
    return Span(sign, float(start), float(end))


def as_span(span: Span | str | tuple[str, float, float]) -> Span:
    """Accept a `Span`, its text form, or a `(sign, start, end)` tuple as the library's anchors are written."""
    if isinstance(span, Span):
        return span
    if isinstance(span, str):
        return parse_span(span)
    try:
        sign, start, end = span
    except (TypeError, ValueError):
        raise SpanError(f"cannot read span {span!r}: expected a Span, a string or a (sign, start, end) tuple") from None
    return Span(str(sign), float(start), float(end))


def to_region(spans: list[Span], start_seconds: float, duration_seconds: float) -> list[Span]:
    """Spans on a source's timeline -> the same spans on the timeline of the region it sends.

    A span must lie inside the region: a prompt about audio the server never hears would be silently wrong.
    """
    end_seconds = start_seconds + duration_seconds
    moved = []
    for span in spans:
        # A millisecond of slack: regions are whole frames, typed spans are decimal seconds.
        if span.start_seconds < start_seconds - 1e-3 or span.end_seconds > end_seconds + 1e-3:
            raise SpanError(
                f"span {span} lies outside the separated region {start_seconds:g}..{end_seconds:g} s "
                "(spans are on the file's timeline): move the span or widen --start/--duration"
            )
        moved.append(
            Span(
                span.sign,
                max(0.0, span.start_seconds - start_seconds),
                min(duration_seconds, span.end_seconds - start_seconds),
            )
        )
    return moved
