"""Several sounds from one selection (issue 17): the cost of a three-prompt stream, and how often the mixture is encoded.

    python -m bench.prompts [--seconds S] [--steps N] [--repeats N] [--threads N] [--tree DIR ...] [--out FILE.json]

The demo-tiny model (random weights, the real architecture at a small size) separates `--seconds` of stereo at
44.1 kHz in the library's streaming engine with the stream defaults (10 s windows, 2 s overlap) and `--steps`
midpoint steps, as one stream of three prompts ("vocals", "drums", "bass") and, for scale, one stream of one.
Each `--tree DIR` runs the same measurement in a child process against the samaudio found in DIR (a checkout of
another commit, for a before/after); the trees take turns, one stream of each kind per turn, after a warm-up.
Reported per tree: the median and spread of seconds per stream, and the codec rows encoded per stream (a
forward pre-hook on the codec: one row is one channel of one window's mixture).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE, CHANNELS = 44100, 2
DESCRIPTIONS = ("vocals", "drums", "bass")


def _signal(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE))[:, None] / RATE
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t * np.arange(1, CHANNELS + 1)) + 0.03 * rng.standard_normal(
        (len(t), CHANNELS))).astype(np.float32)  # fmt: skip


class _Child:
    """One tree's engine in this process: streams timed one at a time."""

    def __init__(self, seconds: float, steps: int, threads: int | None):
        import torch

        from bench.common import build_demo_model
        from samaudio.model.model import midpoint_ode_opt

        if threads:
            torch.set_num_threads(threads)
        self.model, self.processor = build_demo_model()
        self.ode_opt = midpoint_ode_opt(steps)
        self.audio = _signal(seconds)
        self.rows: list[int] = []
        self.model.audio_codec.register_forward_pre_hook(lambda module, args: self.rows.append(args[0].shape[0]))

    def stream(self, prompts: int) -> tuple[float, int, int]:
        """(seconds, codec rows encoded, windows) of one stream of the first `prompts` descriptions."""
        from samaudio.streaming import Prompt, StreamingSeparator

        self.rows.clear()
        start = time.perf_counter()
        sep = StreamingSeparator(
            self.model, self.processor, "", prompts=[Prompt(d) for d in DESCRIPTIONS[:prompts]], sample_rate=RATE,
            channels=CHANNELS, ode_opt=self.ode_opt,
        )  # fmt: skip
        sep.push(self.audio)
        sep.finish()
        return time.perf_counter() - start, sum(self.rows), sep.counters.windows_done


def _child_main(args: argparse.Namespace) -> int:
    """Reads one line per turn on stdin ("1" or "3" prompts), answers one JSON line per stream."""
    child = _Child(args.seconds, args.steps, args.threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        seconds, rows, windows = child.stream(int(line))
        print(json.dumps({"seconds": seconds, "rows": rows, "windows": windows}), flush=True)
    return 0


def measure_prompts(
    trees: list[Path], seconds: float = 12.0, steps: int = 16, repeats: int = 3, threads: int | None = None
) -> dict[str, Any]:
    """A three-prompt and a one-prompt stream per tree, the trees in turns (see the module's docstring)."""
    from bench.common import tree_env, tree_name

    children = {}
    for tree in trees:
        tree = tree.resolve()
        args = [sys.executable, str(Path(__file__).resolve()), "--child", "--seconds", str(seconds), "--steps",
                str(steps)] + (["--threads", str(threads)] if threads else [])  # fmt: skip
        proc = subprocess.Popen(
            args, cwd=tree, env=tree_env(tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert json.loads(proc.stdout.readline())["ready"]
        children[tree_name(tree)] = proc

    def ask(proc: subprocess.Popen, prompts: int) -> dict[str, Any]:
        proc.stdin.write(f"{prompts}\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {1: [], 3: []} for name in children}
    try:
        for proc in children.values():  # warm-up
            ask(proc, 3)
        for _ in range(repeats):
            for name, proc in children.items():
                for prompts in (3, 1):
                    runs[name][prompts].append(ask(proc, prompts))
    finally:
        for proc in children.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    out: dict[str, Any] = {"prompts_stream_seconds_of_audio": seconds, "prompts_solver_steps": steps}
    for name, by in runs.items():
        for prompts, key in ((3, "three_prompts"), (1, "one_prompt")):
            times = [r["seconds"] for r in by[prompts]]
            out[f"prompts_{name}_{key}_seconds"] = statistics.median(times)
            out[f"prompts_{name}_{key}_seconds_spread"] = [min(times), max(times)]
            out[f"prompts_{name}_{key}_codec_rows"] = by[prompts][0]["rows"]
            out[f"prompts_{name}_{key}_windows"] = by[prompts][0]["windows"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prompts", description=__doc__.split("\n\n")[1])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tree", type=Path, action="append", default=[], metavar="DIR")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args)
    from bench.common import report
    from bench.machine import describe_machine

    figures: dict[str, Any] = {"machine": describe_machine("cpu")}
    figures.update(measure_prompts(args.tree or [ROOT], args.seconds, args.steps, args.repeats, args.threads))
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
