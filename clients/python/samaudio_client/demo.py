"""`samaudio demo`: the whole path on a fresh machine, no model download.

A server starts in this process on a free loopback port with a small UNTRAINED model (the `demo-tiny` preset,
random weights), a generated example (two tones and noise) is written to a file, and the `samaudio separate`
command line separates it through the client, writing the stems. The stems prove the path works: file ->
client -> gRPC -> server -> streaming engine -> model -> stems on disk. They are not a separation; an untrained
model returns shaped noise. Needs the `[server]` extra (torch); imported only by `samaudio demo`.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

PRESET = "demo-tiny"
EXAMPLE_RATE = 44100
DESCRIPTION = "a beeping tone"
# Short windows: a few of them cover the example, so the demo streams and crossfades as a real run does, and
# no window is padded far past the example's end.
CHUNK_SECONDS = 2.0
OVERLAP_SECONDS = 0.5
UNTRAINED = (
    f"samaudio demo: the model is UNTRAINED (preset {PRESET!r}, random weights): the stems show that the whole "
    "path works, not what a trained model separates."
)


def make_example(seconds: float, sample_rate: int = EXAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A stereo example: a steady 220 Hz hum left of centre, a 1 kHz tone beeping 4 times a second right of
    centre, and soft noise in both channels. Returns (frames, 2) float32 within [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate  # (frames,)
    hum = 0.3 * np.sin(2 * np.pi * 220 * t)
    beep = 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t * 4) % 1 < 0.5)
    noise = 0.03 * rng.standard_normal((len(t), 2))
    left, right = 0.7 * hum + 0.3 * beep, 0.3 * hum + 0.7 * beep
    return (np.stack([left, right], axis=1) + noise).astype(np.float32)  # (frames, 2)


def build_model():
    """The demo-tiny model with random weights, reproducibly (seed 0), and its processor."""
    import torch

    from samaudio.model import catalog

    # A model this small gains nothing from intra-op threads, and loses much when the cores are busy elsewhere
    # (threads wait for each other at every op).
    torch.set_num_threads(1)
    return catalog.build_untrained(PRESET, seed=0)


def run_demo(
    command_line: Callable[[list[str]], int], out_dir: Path | None = None, seconds: float = 4.0, quiet: bool = False
) -> tuple[Path, Path]:
    """Run the demo through `command_line` (the `samaudio` command's main, passed in so that the demo does not
    import the command that imports it); returns the paths of the target and residual stems written under
    `out_dir` (default: a new temporary folder, so a run from a checkout leaves nothing in it)."""
    from samaudio.defaults import StreamDefaults
    from samaudio_server.server import create_server

    from samaudio_client.errors import ClientError

    print(UNTRAINED, file=sys.stderr)
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="samaudio-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    example = out_dir / "demo-example.wav"
    sf.write(str(example), make_example(seconds), EXAMPLE_RATE, subtype="FLOAT")

    model, processor = build_model()
    server, port = create_server(
        "127.0.0.1:0",
        model=model,
        processor=processor,
        model_name=f"{PRESET}-untrained",
        defaults=StreamDefaults(chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS),
    )
    server.start()
    log.info("demo server on 127.0.0.1:%d", port)
    try:
        argv = ["separate", str(example), "--text", DESCRIPTION, "--server", f"127.0.0.1:{port}"]
        code = command_line([*argv, "--out-dir", str(out_dir), *(["--quiet"] if quiet else [])])
    finally:
        server.stop(0)
    if code != 0:
        raise ClientError(f"the demo's separation failed (exit {code}); see the message above")
    target, residual = out_dir / "demo-example.target.wav", out_dir / "demo-example.residual.wav"
    print(
        f"samaudio demo: separated {example} ({seconds:g} s, stereo, {EXAMPLE_RATE} Hz) for {DESCRIPTION!r} with "
        f"the UNTRAINED {PRESET} model through a server on 127.0.0.1:{port}:\n"
        f"  input     {example}\n  target    {target}\n  residual  {residual}\n"
        f"Next: serve this model (samaudio-server --model {PRESET}), or a trained one (samaudio models lists the "
        "names; --model facebook/sam-audio-small with access to the gated weights), and separate your own audio: "
        'samaudio separate YOUR_FILE --text "..." --server 127.0.0.1:50051'
    )
    return target, residual
