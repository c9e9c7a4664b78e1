"""Audio files in and out, block by block, so memory stays flat for a file of any length.

`Region` is the part of a file that gets separated (`--start/--duration`, or the whole file), `read_blocks`
yields it as float32 `(frames, channels)` blocks straight from disk, and `StemWriter` writes the stems
(`<name>.target.<ext>` and `<name>.residual.<ext>` for one description; `<name>.<description>.<ext>` per
description and `<name>.residual.<ext>` for several) as their blocks arrive, at the input's rate and channels.

Stems are written in the input file's sample format (subtype) by default, as a DAW user expects: PCM_16 in,
PCM_16 out; PCM_24 in, PCM_24 out; float stays float (`output_subtype`). Integer formats cannot hold samples
beyond full scale (a residual or a loud stem can have them): they are clipped, and `StemWriter` warns how many.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from samaudio_client.errors import ClientError

__all__ = ["AudioFileError", "Region", "read_blocks", "stem_paths", "StemWriter", "FORMATS", "output_subtype"]

log = logging.getLogger(__name__)

# Output format -> soundfile (format, subtype when the input's cannot be kept). Stems are float and may exceed
# full scale (a residual can), so WAV falls back to 32-bit float, which keeps them exactly; FLAC has no float,
# 24-bit is its best.
FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
# Integer subtypes -> their largest sample as a float: written samples are clipped to [-1, full]
_INT_FULL_SCALE = {"PCM_S8": 1 - 2**-7, "PCM_U8": 1 - 2**-7, "PCM_16": 1 - 2**-15, "PCM_24": 1 - 2**-23, "PCM_32": 1.0}


class AudioFileError(ClientError, ValueError):
    """An input file that cannot be read, or a region that does not fit it."""


@dataclass(frozen=True)
class Region:
    path: Path
    sample_rate: int
    channels: int
    start: int  # first frame, at the file's rate
    frames: int  # length of the region in frames
    subtype: str = ""  # the file's sample format as libsndfile names it ("PCM_16", "FLOAT", ...)

    @classmethod
    def of(cls, path: str | Path, start: float | None = None, duration: float | None = None) -> Region:
        """The region `[start, start + duration)` seconds of `path` (defaults: the whole file), checked."""
        path = Path(path)
        if path.is_dir():
            raise AudioFileError(f"{path} is a folder: give the audio files in it, e.g. {path / '*.wav'}")
        if not path.is_file():
            raise AudioFileError(f"{path}: no such file")
        try:
            info = sf.info(str(path))
            total = _decoded_frames(path) if info.format == "MP3" else int(info.frames)
        except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
            raise AudioFileError(f"cannot read {path}: {err}") from None
        rate = int(info.samplerate)
        if total == 0:
            raise AudioFileError(f"{path} holds no audio (0 frames)")
        length = total / rate
        if start is not None and (not math.isfinite(start) or start < 0):
            raise AudioFileError(f"--start {start} s must be a time >= 0")
        if duration is not None and (not math.isfinite(duration) or duration <= 0):
            raise AudioFileError(f"--duration {duration} s must be > 0")
        first = round((start or 0.0) * rate)
        if first >= total:
            raise AudioFileError(f"--start {start} s is at or past the end of {path} ({length:.3f} s long)")
        frames = total - first if duration is None else round(duration * rate)
        if first + frames > total:
            raise AudioFileError(
                f"the region {first / rate:g} s + {duration} s ends at {(first + frames) / rate:.3f} s, past the "
                f"end of {path} ({length:.3f} s long): use --duration {(total - first) / rate:.3f} or less"
            )
        return cls(path, rate, int(info.channels), first, frames, str(info.subtype))

    @property
    def start_seconds(self) -> float:
        return self.start / self.sample_rate

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _decoded_frames(path: Path) -> int:
    """The frames an MP3 really decodes to. libsndfile states an estimate from the bit rate when the file has no
    Xing/LAME header (`sox` writes none), off by hundreds of frames either way; decoding is ~1000x real time."""
    with sf.SoundFile(str(path)) as f:
        stated = f.frames
        block = np.empty((1 << 16, f.channels), np.float32)  # (n, channels), reused: memory stays flat
        total = 0
        while (n := len(f.read(out=block))) > 0:
            total += n
    if abs(total - stated) > 1:
        log.warning(
            "%s: its header states %d frames, it decodes to %d (an MP3 states an estimate): using %d",
            path,
            stated,
            total,
            total,
        )
    return total


def read_blocks(region: Region, block_frames: int) -> Iterator[np.ndarray]:
    """Yield the region as float32 `(n, channels)` blocks of at most `block_frames`, read lazily from disk."""
    with sf.SoundFile(str(region.path)) as f:
        f.seek(region.start)
        left = region.frames
        while left > 0:
            block = f.read(min(block_frames, left), dtype="float32", always_2d=True)  # (n, channels)
            if len(block) == 0:
                raise AudioFileError(f"{region.path} ended {left} frames before its stated length")
            left -= len(block)
            yield block


def output_subtype(fmt: str, input_subtype: str = "", requested: str | None = None) -> str:
    """The subtype stems are written in: `requested` if given (checked), else the input's if `fmt` holds it,
    else the format's float-safe default (FORMATS)."""
    if fmt not in FORMATS:
        raise AudioFileError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    major, fallback = FORMATS[fmt]
    if requested is not None:
        subtype = requested.upper()
        if not sf.check_format(major, subtype):
            known = ", ".join(sorted(sf.available_subtypes(major)))
            raise AudioFileError(f"{fmt} files cannot hold the subtype {requested!r}; choose one of {known}")
        return subtype
    # Only plain samples are kept: a compressed input's subtype (MP3, Vorbis, u-law, ...) may be accepted by
    # check_format for a WAV yet not write (MPEG_LAYER_III in WAV), and would lose quality again if it did.
    plain = input_subtype in _INT_FULL_SCALE or input_subtype in ("FLOAT", "DOUBLE")
    return input_subtype if plain and sf.check_format(major, input_subtype) else fallback


def stem_name(description: str) -> str:
    """A file-name part for a description: `"Lead vocals!"` -> `"lead-vocals"` (letters, digits, `-`, `_`)."""
    name = re.sub(r"[^\w-]+", "-", description.strip().lower(), flags=re.UNICODE).strip("-_.")
    return name or "stem"


def stem_paths(
    path: str | Path, out_dir: str | Path | None, fmt: str, descriptions: Sequence[str] = ()
) -> tuple[Path, ...]:
    """`song.wav` -> (`<out_dir>/song.target.<fmt>`, `<out_dir>/song.residual.<fmt>`); out_dir defaults to the input's.

    With two or more `descriptions`: one path per description, named after it (`song.vocals.wav`; a repeated
    name gets `-2`, `-3`; one named "residual" becomes "residual-target"), then the residual's.
    """
    path = Path(path)
    folder = Path(out_dir) if out_dir is not None else path.parent
    names = ["target"]
    if len(descriptions) > 1:
        names, seen = [], {"residual": 1}
        for d in descriptions:
            base = stem_name(d)
            if base == "residual":
                base = "residual-target"
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return tuple(folder / f"{path.stem}.{n}.{fmt}" for n in (*names, "residual"))


class StemWriter:
    """The stem files, open for writing; `write(start, *stems)` appends one block per file, in order.

    The files are written to `<name>.part` names and renamed on `close()`, so a failed or cancelled run never
    leaves a truncated file under the final name. `subtype` (None: the format's default, see `output_subtype`)
    sets the sample format; in an integer one, samples beyond full scale are clipped and counted in `clipped`.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        sample_rate: int,
        channels: int,
        fmt: str = "wav",
        subtype: str | None = None,
    ) -> None:
        subtype = output_subtype(fmt, requested=subtype)
        self.paths = tuple(paths)
        self.subtype = subtype
        self.frames = 0
        self.clipped = [0] * len(self.paths)  # samples clipped to full scale, per file
        self._full = _INT_FULL_SCALE.get(subtype)
        self._parts = [p.with_name(p.name + ".part") for p in self.paths]
        for part in self._parts:
            part.parent.mkdir(parents=True, exist_ok=True)
        self._files = [
            sf.SoundFile(str(p), "w", samplerate=sample_rate, channels=channels, format=FORMATS[fmt][0], subtype=subtype)
            for p in self._parts
        ]

    def write(self, start: int, *stems: np.ndarray) -> None:
        # The server sends each frame once, in order; anything else is a protocol fault, not a user error.
        assert start == self.frames, f"stem block starts at frame {start}, expected {self.frames}"
        assert len(stems) == len(self._files), (len(stems), len(self._files))
        assert all(s.shape == stems[0].shape for s in stems), [s.shape for s in stems]
        for i, (f, stem) in enumerate(zip(self._files, stems)):
            if self._full is not None:  # counted for the warning, and clipped here whatever libsndfile would do
                over = (stem < -1.0) | (stem > self._full)
                if over.any():
                    self.clipped[i] += int(over.sum())
                    stem = np.clip(stem, -1.0, self._full)
            f.write(stem)
        self.frames += len(stems[0])

    def close(self) -> None:
        """Finish the files and move them to their final names; warn about clipped samples."""
        for f in self._files:
            f.close()
        for part, path in zip(self._parts, self.paths):
            part.replace(path)
        for path, n in zip(self.paths, self.clipped):
            if n:
                log.warning(
                    "%s: %d sample(s) beyond full scale were clipped to fit %s; write a float subtype to keep them "
                    "(e.g. WAV FLOAT)",
                    path.name,
                    n,
                    self.subtype,
                )

    def abort(self) -> None:
        """Close and delete the partial files."""
        for f in self._files:
            f.close()
        for part in self._parts:
            part.unlink(missing_ok=True)
