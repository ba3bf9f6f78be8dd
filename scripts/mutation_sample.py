"""Print a seeded random sample of each configured module's mutant names (scripts/mutation.sh --sample N).

mutmut names its mutants only once it has generated them, so this generates them first (the step `mutmut run`
starts with, and then finds done), in the mutation copy it is run in. Usage: mutation_sample.py N SEED.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import mutmut.__main__ as mutmut_main


def generate_mutants() -> None:
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the names
        mutmut_main.set_mutant_under_test("mutant_generation")
        os.makedirs("mutants", exist_ok=True)
        mutmut_main.copy_src_dir()
        mutmut_main.copy_also_copy_files()
        mutmut_main.setup_source_paths()
        mutmut_main.store_lines_covered_by_tests()
        mutmut_main.create_mutants(2)


def sample_names(size: int, seed: int) -> list[str]:
    patterns = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    names = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        source = str(meta.relative_to("mutants").with_suffix(""))
        if not any(fnmatch(source, pattern) for pattern in patterns):
            continue
        keys = sorted(json.loads(meta.read_text())["exit_code_by_key"])
        # Seeded per module, so narrowing a run to some modules draws the same sample of each.
        names += random.Random(f"{seed}:{source}").sample(keys, min(size, len(keys)))
    return names


if __name__ == "__main__":
    generate_mutants()
    print("\n".join(sample_names(int(sys.argv[1]), int(sys.argv[2]))))
