"""The evaluation's command line: `samaudio eval ...`, `python -m samaudio.eval ...` and, data-parallel,
`torchrun --nproc_per_node N -m samaudio.eval ...`. Through a server (`--server`) the separator is the thin
client's, so only `samaudio eval` (`samaudio_client.cli`) runs that.

Defining the options imports no torch (the thin `samaudio` command lists them); running them needs the
`[server]` and `[eval]` extras.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from samaudio.eval.separators import Separator

DEFAULT_DATA = Path(os.environ.get("SAMAUDIO_EVAL_DATA", Path.home() / ".cache" / "samaudio" / "eval"))
DEFAULT_MODEL = "facebook/sam-audio-large"  # the official harness's default checkpoint
DEFAULT_METRICS = "judge,aesthetics,clap,imagebind"  # the official harness's metrics (imagebind: visual settings)

DESCRIPTION = (
    "Separate every item of the chosen settings and score the targets with the official metrics (SAM-Audio Judge, "
    "Audiobox Aesthetics, CLAP, ImageBind for visual settings) and SI-SDR / SDR where an item has a reference. "
    "Summaries average per column (sums over counts) like the official harness and are written as "
    "<out>/<setting>.json with 3-decimal values, beside per-item rows (.jsonl, .csv). A rerun skips items already "
    "done. Many GPUs: torchrun --nproc_per_node N -m samaudio.eval ... (same options)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from samaudio.eval.settings import SETTINGS

    p.add_argument("-s", "--setting", nargs="+", default=["instr-pro"], choices=list(SETTINGS), metavar="SETTING",
                   help=f"settings to evaluate: {', '.join(SETTINGS)} (default: %(default)s)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with one sub-folder per setting, one folder per item: mixture.wav, description.txt, "
                   "optional reference.wav, spans.json, video.mp4, mask.npy (default: $SAMAUDIO_EVAL_DATA or "
                   "%(default)s)")
    p.add_argument("-p", "--model", default=None,
                   help="model to separate with in this process: a name (`samaudio models`), folder or hub id "
                   f"(default: {DEFAULT_MODEL}, as officially); with --server, the served model of that name "
                   "(default: the server's)")
    p.add_argument("--server", metavar="HOST:PORT", default=None,
                   help="separate through this samaudio server instead (its streaming engine: windows and seams)")
    p.add_argument("--token", default=os.environ.get("SAMAUDIO_TOKEN"), help="the server's token ($SAMAUDIO_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="CA certificate of a TLS server")
    p.add_argument("-c", "--candidates", type=int, default=8,
                   help="candidates per item, ranked by the model's rankers (default: %(default)s, as officially)")
    p.add_argument("--predict-spans", action="store_true", help="prompt with predicted spans (text settings)")
    p.add_argument("--text-ranker", default="config",
                   help="in this process, with candidates > 1: the ranker that picks among them: 'config' (the "
                   "model's config.json entry, as officially), a kind (judge, clap, ensemble) or 'none' "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="midpoint solver steps (default: the model's, 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of every item's noise (default: %(default)s)")
    p.add_argument("--metrics", default=DEFAULT_METRICS,
                   help="comma-separated: judge, aesthetics, clap, imagebind, sisdr (default: %(default)s)")
    for name, what in [("judge", "SAM-Audio Judge folder or hub id (default: facebook/sam-audio-judge)"),
                       ("aesthetics", "Audiobox Aesthetics checkpoint (default: facebook/audiobox-aesthetics)"),
                       ("clap", "LAION-CLAP checkpoint (default: 630k-best.pt from lukewys/laion_clap)"),
                       ("imagebind", "ImageBind checkpoint (default: imagebind_huge.pth)")]:
        p.add_argument(f"--{name}", default=None, metavar="SOURCE", help=what)
    p.add_argument("--out", type=Path, default=Path("results"), help="where results go (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available; LOCAL_RANK's GPU)")
    p.add_argument("--limit", type=int, default=None, help="at most this many items per setting")
    p.add_argument("--plot", action="store_true", help="write <out>/distributions.png of per-item values")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `samaudio eval` on the CLI's subparsers."""
    p = subparsers.add_parser("eval", help="the official evaluation, reference-free and with references",
                              description=DESCRIPTION)
    add_arguments(p)
    return p


def _device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def main(args: argparse.Namespace, separator: Separator | None = None) -> int:
    """Run the evaluation; 0 when every setting was evaluated. Errors raise the library's named exceptions.

    `separator` is what `--server` separates with (`samaudio eval` passes the thin client's); without `--server`
    the model is loaded in this process."""
    from samaudio.eval.metrics import build_metrics
    from samaudio.eval.runner import Ranks, evaluate_setting, plot, table
    from samaudio.errors import InvalidRequestError
    from samaudio.eval.separators import InProcessSeparator
    from samaudio.eval.settings import get_setting

    logging.basicConfig(level=logging.INFO, format="samaudio eval: %(message)s")
    ranks = Ranks.from_env()
    ranks.init()
    device = _device(args.device)
    settings = [get_setting(s) for s in args.setting]
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    if not any(s.prompt == "visual" for s in settings):
        names = [n for n in names if n != "imagebind"]  # only visual settings have a video to compare with
    weights = {"judge": args.judge, "aesthetics": args.aesthetics, "clap": args.clap, "imagebind": args.imagebind}
    metrics = build_metrics(names, weights, device)  # before any separation: a missing weight fails first
    if args.server:
        if separator is None:
            raise InvalidRequestError(
                f"--server {args.server} separates through the samaudio client: run it as `samaudio eval --server "
                f"{args.server} ...` (many processes: torchrun ... -m samaudio_client.cli eval --server ...)"
            )
    else:
        from samaudio.model import catalog

        parts: dict[str, Any] = {}
        if args.candidates > 1 and args.text_ranker != "none":
            parts["text_ranker"] = True if args.text_ranker == "config" else args.text_ranker
        if args.candidates > 1 and any(s.prompt == "visual" for s in settings):
            parts["visual_ranker"] = True
        if args.predict_spans:
            parts["span_predictor"] = True
        visual = any(s.prompt == "visual" for s in settings)
        model, processor = catalog.load(args.model or DEFAULT_MODEL, device=device, vision=visual, **parts)
        separator = InProcessSeparator(model, processor, candidates=args.candidates,
                                       predict_spans=args.predict_spans, seed=args.seed, steps=args.steps)
    results = []
    for setting in settings:
        result = evaluate_setting(setting, args.data, separator, metrics, args.out, ranks=ranks,
                                  progress=not args.no_progress, limit=args.limit)
        if result is not None:
            results.append(result)
    if ranks.rank == 0 and results:
        print(table(results))
        timings = {r.setting: r.seconds_per_item for r in results}
        (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        if args.plot:
            print(f"plot: {plot(args.out, [r.setting for r in results])}")
    return 0
