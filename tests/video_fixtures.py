"""Helpers for the visual-prompting tests: tiny masked videos, written to real files with PyAV.

Import what you need (`from video_fixtures import ...`); `vision_model` is a module-scoped fixture: the golden
model with its tiny PE vision encoder.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

# lossless RGB (frames decode to exactly what was written) and a common lossy codec
CODECS = {"ffv1": ("matroska", "bgr0"), "mpeg4": ("mp4", "yuv420p")}


def tiny_video(frames: int = 10, height: int = 32, width: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random RGB frames (N, 3, H, W) uint8 and object masks (N, H, W) bool: a box moving right, one pixel a frame."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=g)
    masks = torch.zeros(frames, height, width, dtype=torch.bool)
    for i in range(frames):
        masks[i, height // 4 : 3 * height // 4, 5 + i : 5 + i + width // 3] = True
    return video, masks


def numbered_video(frames: int, height: int = 16, width: int = 16) -> torch.Tensor:
    """(N, 3, H, W) uint8 with frame i filled with the value i * 10, so a selected frame tells its index."""
    return (torch.arange(frames, dtype=torch.uint8) * 10)[:, None, None, None].expand(frames, 3, height, width).clone()


def encode_video(frames: torch.Tensor, fps: float | Fraction, codec: str = "ffv1") -> bytes:
    """(N, 3, H, W) uint8 RGB -> the bytes of a video file at `fps`, encoded with PyAV's own FFmpeg."""
    import av

    container_format, pix_fmt = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[3], frames.shape[2], pix_fmt
        for frame in frames.permute(0, 2, 3, 1).numpy():  # (H, W, 3) each
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)
    return buf.getvalue()


def write_video(path: Path, frames: torch.Tensor, fps: float | Fraction, codec: str = "ffv1") -> Path:
    path.write_bytes(encode_video(frames, fps, codec))
    return path


@pytest.fixture(scope="module")
def vision_model(golden_dir):
    """The golden model with its vision encoder at the case's own PE sizes (head counts are not in the weights)."""
    from samaudio import SAMAudio

    pe = json.loads((golden_dir / "parity.json").read_text())["pe_tiny_config"]
    return SAMAudio.from_pretrained(golden_dir, vision=True, pe_config=pe)
