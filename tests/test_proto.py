"""The committed protocol modules are what protoc makes of the proto, and they import without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from samaudio.v1 import generate

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_the_proto_gives_the_committed_modules(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    for fresh in generate.generate(tmp_path):
        committed = ROOT / fresh.relative_to(tmp_path)
        assert committed.read_text() == fresh.read_text(), (
            f"{committed.relative_to(ROOT)} is stale: run `python -m samaudio.v1.generate` "
            "(with the grpcio-tools version of the [dev] extra) and commit the result"
        )


def test_generated_modules_import_without_torch():
    code = (
        "import sys\n"
        "from samaudio.v1 import separation_pb2, separation_pb2_grpc\n"
        "assert separation_pb2.SeparateRequest(audio_content=b'x').WhichOneof('streaming_request') == 'audio_content'\n"
        "assert separation_pb2_grpc.SeparationServiceStub\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", "importing samaudio.v1 pulled in torch"


def test_every_enum_starts_with_its_unspecified_zero_value():
    from samaudio.v1 import separation_pb2

    for enum in separation_pb2.DESCRIPTOR.enum_types_by_name.values():
        zero = enum.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), f"{enum.name} starts with {zero}"
        prefix = zero.removesuffix("UNSPECIFIED")
        assert all(v.name.startswith(prefix) for v in enum.values), f"{enum.name} has an unprefixed value"
