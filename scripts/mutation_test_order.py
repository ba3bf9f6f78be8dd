"""pytest plugin for mutation runs only: run the test files that cover a mutant fastest first.

mutmut (with process_isolation = "forkserver") hands pytest a mutant's tests in no particular order and stops
at the first failure (-x), so a mutant that a quick unit test kills can first sit through seconds of
integration tests. This sorts whole test files (so module fixtures are set up once) by the time their tests
took in mutmut's stats run, recorded in mutmut-stats.json in the directory pytest runs in (mutants/).
[tool.mutmut] pytest_add_cli_args loads it; without that file (the stats run itself) it changes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        durations: dict[str, float] = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    by_file: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.partition("::")[0], []).append(item)
    cost = {name: sum(durations.get(item.nodeid, 1.0) for item in group) for name, group in by_file.items()}
    items[:] = [item for name in sorted(by_file, key=cost.__getitem__) for item in by_file[name]]
