"""The install's version floors admit no grpcio or protobuf that the checked-in generated code refuses.

The generated modules under quiver/v1 raise at import when the runtime is older than the generator that
wrote them, so a floor below that is a client install that cannot import its own stubs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "quiver" / "v1"


def _requirements(names: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in names]
    return {requirement.name: requirement for requirement in parsed}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _floor(requirement: Requirement) -> Version:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
    assert floors, f"{requirement} has no lower bound"
    return max(floors)


def _grpc_generated_versions() -> set[Version]:
    pattern = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'", re.MULTILINE)
    return {Version(pattern.search(path.read_text()).group(1)) for path in GENERATED.glob("*_pb2_grpc.py")}


def _protobuf_generated_versions() -> set[Version]:
    pattern = re.compile(r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),")
    return {Version(".".join(pattern.search(path.read_text()).groups())) for path in GENERATED.glob("*_pb2.py")}


def test_grpcio_floor_admits_only_runtimes_the_generated_stubs_import_under() -> None:
    dependencies = _requirements(_project()["dependencies"])
    generated = _grpc_generated_versions()
    assert generated, "no generated *_pb2_grpc.py found"
    for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
        assert _floor(dependencies[name]) >= max(generated), (name, generated)


def test_protobuf_floor_admits_only_runtimes_the_generated_messages_import_under() -> None:
    dependencies = _requirements(_project()["dependencies"])
    generated = _protobuf_generated_versions()
    assert generated, "no generated *_pb2.py found"
    assert _floor(dependencies["protobuf"]) >= max(generated), generated


def test_grpcio_tools_is_pinned_to_the_generator_of_the_checked_in_code() -> None:
    test_extra = _requirements(_project()["optional-dependencies"]["test"])
    pinned = [spec for spec in test_extra["grpcio-tools"].specifier if spec.operator == "=="]
    assert len(pinned) == 1, "CI regenerates and diffs: the generator must be one exact version"
    assert _grpc_generated_versions() == {Version(pinned[0].version)}
