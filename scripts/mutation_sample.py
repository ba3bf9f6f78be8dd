"""A seeded random sample of each configured module's mutants (scripts/mutation.sh --sample N).

mutmut names its mutants only once it has generated them, so this generates them first (the step `mutmut run`
starts with, and then finds done), in the mutation copy it is run in. It writes the whole sample to
mutants/.sample (the report scores only those) and prints the names that have no verdict yet: mutmut tests
every mutant it is given by name again, so a resumed run passes only the rest. Usage: mutation_sample.py N SEED.
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


def undecided(names: list[str]) -> list[str]:
    verdicts: dict[str, int | None] = {}
    for meta in Path("mutants").rglob("*.py.meta"):
        verdicts.update(json.loads(meta.read_text())["exit_code_by_key"])
    return [name for name in names if verdicts.get(name) is None]


if __name__ == "__main__":
    generate_mutants()
    sample = sample_names(int(sys.argv[1]), int(sys.argv[2]))
    if not sample:
        sys.exit("no mutants to sample: mutant generation found nothing (see above)")
    Path("mutants/.sample").write_text("\n".join(sample) + "\n")
    left = undecided(sample)
    print(f"sample of {len(sample)} mutants, {len(left)} without a verdict", file=sys.stderr)
    print("\n".join(left))
