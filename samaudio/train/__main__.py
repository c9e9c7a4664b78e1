"""`python -m samaudio.train --preset samaudio-demo --out DIR`: train a preset from scratch, or resume in DIR."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import torch

from samaudio.model.config import get_preset
from samaudio.train.loop import Trainer, TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samaudio.train", description=__doc__)
    parser.add_argument("--preset", default="samaudio-demo", help="preset name (samaudio/presets/NAME.json)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, losses.jsonl, model/")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    for f in dataclasses.fields(TrainConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    train = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    trainer = Trainer(get_preset(args.preset).build_config(), args.out, train)
    folder = trainer.run()
    print(f"trained {args.preset}: {folder} ({trainer.elapsed / 60:.1f} min of training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
