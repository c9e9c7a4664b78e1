"""Starting noise and watermark messages of a stream: functions of the seed and absolute positions only.

Overlapping windows start from the same noise where they overlap, so a stream's result does not depend on how its
input was pushed or which windows were batched together (see `samaudio.streaming`).
"""

from __future__ import annotations

import numpy as np
import torch

NOISE_CHUNK_FRAMES = 25  # latent frames drawn from one generator (1 s): see frame_noise
WATERMARK_BITS = 16  # the codec's message length (dacvae NBITS)


def frame_noise(seed: int, first_frame: int, frames: int, width: int, candidate: int = 0) -> torch.Tensor:
    """Starting noise of latent frames [first_frame, first_frame + frames): (frames, width) float32.

    Frames are drawn in absolute chunks of NOISE_CHUNK_FRAMES rows, chunk c from a generator seeded by
    (seed, candidate, c) alone, so row f depends on (seed, candidate, f) only and any two windows that share a
    frame share its noise. One generator per chunk rather than per row: seeding a generator costs ~25 us, ten
    times the draw. Candidate 0 keeps the single-candidate stream's noise, so K = 1 results never change.
    """
    if frames <= 0:
        return torch.zeros(0, width)
    K = NOISE_CHUNK_FRAMES
    c0, c1 = first_frame // K, (first_frame + frames - 1) // K
    block = np.concatenate(
        [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence(_seed_entropy(seed), spawn_key=key)))
            .standard_normal((K, width), dtype=np.float32)
            for key in (_noise_key(candidate, c) for c in range(c0, c1 + 1))
        ]
    )  # ((c1 - c0 + 1) * K, width)
    a = first_frame - c0 * K
    return torch.from_numpy(np.ascontiguousarray(block[a : a + frames]))  # (frames, width)


def _noise_key(candidate: int, chunk: int) -> tuple[int, ...]:
    return (2, chunk) if candidate == 0 else (3, candidate, chunk)  # 2: candidate 0, as before candidates existed


def watermark_bits(seed: int) -> torch.Tensor:
    """The stream's watermark messages: (2, 16) float bits, row 0 for the target, row 1 for the residual."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(_seed_entropy(seed), spawn_key=(1,))))
    return torch.from_numpy(rng.integers(0, 2, (2, WATERMARK_BITS)).astype(np.float32))  # (2, 16)


def _seed_entropy(seed: int) -> int:
    return int(seed) & (2**64 - 1)  # SeedSequence wants a non-negative integer; negative seeds wrap

