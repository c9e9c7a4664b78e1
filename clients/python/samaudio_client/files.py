"""Audio files in and out, block by block, so memory stays flat for a file of any length.

`Region` is the part of a file that gets separated (`--start/--duration`, or the whole file), `read_blocks`
yields it as float32 `(frames, channels)` blocks straight from disk, and `StemWriter` writes the two stems
`<name>.target.<ext>` and `<name>.residual.<ext>` as their blocks arrive, at the input's rate and channels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from samaudio_client.errors import SamaudioError

__all__ = ["AudioFileError", "Region", "read_blocks", "stem_paths", "StemWriter", "FORMATS"]

log = logging.getLogger(__name__)

# Output format -> soundfile (format, subtype). Stems are float and may exceed full scale (a residual can),
# so WAV is written as 32-bit float, which keeps them exactly; FLAC has no float, 24-bit is its best.
FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


class AudioFileError(SamaudioError, ValueError):
    """An input file that cannot be read, or a region that does not fit it."""


@dataclass(frozen=True)
class Region:
    path: Path
    sample_rate: int
    channels: int
    start: int  # first frame, at the file's rate
    frames: int  # length of the region in frames

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
        return cls(path, rate, int(info.channels), first, frames)

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
        log.warning("%s: its header states %d frames, it decodes to %d (an MP3 states an estimate): using %d", path, stated, total, total)
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


def stem_paths(path: str | Path, out_dir: str | Path | None, fmt: str) -> tuple[Path, Path]:
    """`song.wav` -> (`<out_dir>/song.target.<fmt>`, `<out_dir>/song.residual.<fmt>`); out_dir defaults to the input's."""
    path = Path(path)
    folder = Path(out_dir) if out_dir is not None else path.parent
    return folder / f"{path.stem}.target.{fmt}", folder / f"{path.stem}.residual.{fmt}"


class StemWriter:
    """Both stem files, open for writing; `write(start, target, residual)` appends blocks in order.

    The files are written to `<name>.part` names and renamed on `close()`, so a failed or cancelled run never
    leaves a truncated file under the final name.
    """

    def __init__(self, paths: tuple[Path, Path], sample_rate: int, channels: int, fmt: str = "wav") -> None:
        if fmt not in FORMATS:
            raise AudioFileError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.paths = paths
        self.frames = 0
        major, subtype = FORMATS[fmt]
        self._parts = [p.with_name(p.name + ".part") for p in paths]
        for part in self._parts:
            part.parent.mkdir(parents=True, exist_ok=True)
        self._files = [
            sf.SoundFile(str(p), "w", samplerate=sample_rate, channels=channels, format=major, subtype=subtype)
            for p in self._parts
        ]

    def write(self, start: int, target: np.ndarray, residual: np.ndarray) -> None:
        # The server sends each frame once, in order; anything else is a protocol fault, not a user error.
        assert start == self.frames, f"stem block starts at frame {start}, expected {self.frames}"
        assert target.shape == residual.shape, (target.shape, residual.shape)
        self._files[0].write(target)
        self._files[1].write(residual)
        self.frames += len(target)

    def close(self) -> None:
        """Finish both files and move them to their final names."""
        for f in self._files:
            f.close()
        for part, path in zip(self._parts, self.paths):
            part.replace(path)

    def abort(self) -> None:
        """Close and delete the partial files."""
        for f in self._files:
            f.close()
        for part in self._parts:
            part.unlink(missing_ok=True)
