"""`python -m samaudio.eval ...` (what `torchrun --nproc_per_node N -m samaudio.eval ...` starts on every rank)."""

import argparse
import sys

from samaudio.eval.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m samaudio.eval", description=__doc__)
add_arguments(parser)
sys.exit(main(parser.parse_args()))
