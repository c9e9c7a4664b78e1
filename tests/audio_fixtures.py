"""Audio files the way users have them, for the file-reading tests: an MP3 that misstates its own length.

Import what you need (`from audio_fixtures import ...`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp3_without_length_header(path: Path, seconds: float, rate: int = 44100, channels: int = 2) -> None:
    """A CBR MP3 with no Xing/LAME header, as `sox -C 192` writes it: libsndfile then states a length estimated
    from the bit rate and the file size, hundreds of frames off the length it decodes to."""
    import av

    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w", format="mp3", options={"write_xing": "0"}) as container:
        stream = container.add_stream("mp3", rate=rate, layout=layout)
        stream.bit_rate = 192_000
        t = np.arange(round(seconds * rate)) / rate  # (frames,)
        tones = [0.3 * np.sin(2 * np.pi * (330 + 110 * c) * t) for c in range(channels)]
        frame = av.AudioFrame.from_ndarray(np.stack(tones).astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def decoded_frames(path: Path) -> int:
    """The frames a file decodes to, read until the decoder stops (`SoundFile.blocks` stops at the stated length)."""
    import soundfile as sf

    total = 0
    with sf.SoundFile(str(path)) as f:
        while len(block := f.read(4096, dtype="float32")) > 0:
            total += len(block)
    return total
