"""`samaudio demo`: the whole path on a fresh machine, no model download, and how well it separated.

A server starts in this process on a free loopback port with the trained `samaudio-demo` model that ships with
samaudio (small, trained by `samaudio.train` on synthetic sound classes: a bass line, a kick drum, tones, noise
bursts). A mixture of three of those classes is generated and written to a file, and the `samaudio separate`
command line separates all three from it in one stream through the client, writing one stem per description and
the residual. The demo then scores each stem against the source it should recover (SI-SDR, and its improvement
over the mixture). Without the shipped weights it falls back to the untrained `demo-tiny` model and says so.
Needs the `[server]` extra (torch); imported only by `samaudio demo`.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Callable

import soundfile as sf

log = logging.getLogger(__name__)

DESCRIPTIONS = ("a bass line", "a kick drum", "a beeping tone")
UNTRAINED = (
    "samaudio demo: the trained demo model is not installed; using the UNTRAINED demo-tiny model (random weights): "
    "the stems show that the whole path works, not a separation."
)


def run_demo(
    command_line: Callable[[list[str]], int], out_dir: Path | None = None, seconds: float = 8.0, quiet: bool = False
) -> dict[str, Path]:
    """Run the demo through `command_line` (the `samaudio` command's main, passed in so that the demo does not
    import the command that imports it); returns the paths it wrote by name (`input`, each description,
    `residual`) under `out_dir` (default: a new temporary folder, so a run from a checkout leaves nothing in it)."""
    from samaudio.train.data import SAMPLE_RATE, demo_mixture
    from samaudio.train.evaluate import si_sdr
    from samaudio_server.demo import start_demo_server

    from samaudio_client.errors import ClientError
    from samaudio_client.files import stem_paths

    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="samaudio-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    example = out_dir / "demo-example.wav"
    mixture, sources = demo_mixture(seconds, DESCRIPTIONS)  # (L,), {description: (L,)}
    sf.write(str(example), mixture, SAMPLE_RATE, subtype="FLOAT")

    demo = start_demo_server()
    if not demo.trained:
        print(UNTRAINED, file=sys.stderr)
    try:
        argv = ["separate", str(example), *(a for d in DESCRIPTIONS for a in ("--text", d)), "--server", demo.address]
        code = command_line([*argv, "--out-dir", str(out_dir), *(["--quiet"] if quiet else [])])
    finally:
        demo.stop()
    if code != 0:
        raise ClientError(f"the demo's separation failed (exit {code}); see the message above")

    *stems, residual = stem_paths(example, out_dir, "wav", DESCRIPTIONS)
    paths = {"input": example, **dict(zip(DESCRIPTIONS, stems)), "residual": residual}
    width = max(len(name) for name in paths)
    lines = [f"  {'input':<{width}}  {example}"]
    for description, path in zip(DESCRIPTIONS, stems):
        stem, _ = sf.read(str(path), dtype="float32")
        source = sources[description]
        got, mix = si_sdr(stem, source), si_sdr(mixture, source)
        lines.append(
            f"  {description:<{width}}  {path}  SI-SDR {got:5.1f} dB (the mixture's {mix:5.1f} dB: {got - mix:+.1f} dB)"
        )
    lines.append(f"  {'residual':<{width}}  {residual}")
    kind = "trained" if demo.trained else "UNTRAINED"
    print(
        f"samaudio demo: separated {len(DESCRIPTIONS)} sounds from a {seconds:g} s mixture ({SAMPLE_RATE} Hz, mono) "
        f"in one stream with the {kind} {demo.model_name} model through a server on {demo.address}:\n"
        + "\n".join(lines)
        + f"\nSI-SDR: how close each stem is to the sound that was mixed in (higher is better).\n"
        f"Next: serve a model (samaudio-server --model {demo.model_name}; samaudio models lists the names; "
        "--model facebook/sam-audio-small with access to the gated weights), and separate your own audio: "
        'samaudio separate YOUR_FILE --text "..." --server 127.0.0.1:50051'
    )
    return paths
