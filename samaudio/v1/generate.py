"""Regenerate the Python modules of `proto/samaudio/v1/separation.proto` into this package.

Run from anywhere, with grpcio-tools installed (the `[dev]` extra):

    python -m samaudio.v1.generate            # rewrite samaudio/v1/separation_pb2*.py{,i}
    python -m samaudio.v1.generate --out DIR  # write DIR/samaudio/v1/... instead (to compare)

The generated modules are committed so that the thin client needs neither protoc nor grpcio-tools.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
PROTO = Path("samaudio") / "v1" / "separation.proto"
# What protoc writes for PROTO, relative to the output root.
GENERATED = tuple(
    Path("samaudio") / "v1" / name for name in ("separation_pb2.py", "separation_pb2.pyi", "separation_pb2_grpc.py")
)

log = logging.getLogger(__name__)


def generate(out_root: Path = ROOT) -> list[Path]:
    """Run protoc on the proto; return the paths of the generated files under `out_root`."""
    (out_root / PROTO.parent).mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(PROTO_ROOT / PROTO),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed ({done.returncode}): {done.stderr.strip()}\ncommand: {' '.join(cmd)}")
    paths = [out_root / p for p in GENERATED]
    log.info("generated %s", ", ".join(str(p) for p in paths))
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out)


if __name__ == "__main__":
    main()
