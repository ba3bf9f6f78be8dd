"""Per-module mutation-testing table from mutmut's results in mutants/, and the surviving mutants to look at.

mutmut keeps one `mutants/<path>.meta` per mutated file (mutant name -> exit code); this reads those for the
files that `[tool.mutmut] only_mutate` in pyproject.toml names, so it always reports on what was configured.
Score = killed / (mutants - skipped - equivalent - not checked). A timeout is not counted as a kill (on a busy
machine a slow run can time out without the mutant being wrong); the +timeout column counts it. Mutants a
person has judged equivalent (no test could tell them from the original) are listed in
scripts/mutation_equivalent.txt, one `mutant.name  mutated line` per line, so a re-run keeps the judgement; an
entry whose mutated line no longer matches (the function changed and mutmut renumbered its mutants) is
ignored, with a warning.

Run where mutmut ran (scripts/mutation.sh does): `python scripts/mutation_report.py [--survivors] [--below 80]`.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import re
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

EQUIVALENT_FILE = Path(__file__).parent / "mutation_equivalent.txt"
SAMPLE_FILE = Path("mutants/.sample")  # written by mutation_sample.py: the mutants a sampled run tests

# mutmut 3's exit-code meanings (mutmut/stats.py), folded into the table's columns.
_STATUS_BY_EXIT_CODE = {
    1: "killed", 3: "killed",
    0: "survived",
    5: "no tests", 33: "no tests",
    34: "skipped",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
    None: "not checked",
}


LOG_CALL = "_log."


def status_of(exit_code: int | None) -> str:
    return _STATUS_BY_EXIT_CODE.get(exit_code, "other")  # suspicious, segfault, interrupted


@dataclass
class Mutant:
    name: str
    path: Path
    status: str


def configured_files(pyproject: Path) -> list[Path]:
    config = tomllib.loads(pyproject.read_text())["tool"]["mutmut"]
    files = []
    for root in config["source_paths"]:
        for path in sorted(Path(root).rglob("*.py")):
            if any(fnmatch(str(path), pattern) for pattern in config.get("only_mutate", ["*"])):
                files.append(path)
    return files


def load_mutants(path: Path) -> list[Mutant]:
    meta = Path("mutants") / f"{path}.meta"
    if not meta.exists():
        return []
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    return [Mutant(name, path, status_of(code)) for name, code in exit_codes.items()]


def function_key(mutant_name: str) -> tuple[str | None, str]:
    """(class or None, function) from a name such as `shard.wal.xǁWalǁappend__mutmut_3`."""
    mangled = mutant_name.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("x_"):
        return None, mangled[2:]
    _, cls, func = mangled.split("ǁ")
    return cls, func


def def_lines(path: Path) -> dict[tuple[str | None, str], int]:
    """Line of each top-level function's and method's `def` in the original source."""
    lines: dict[tuple[str | None, str], int] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[(None, node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines[(node.name, item.name)] = item.lineno
    return lines


def describe(mutant: Mutant, def_line: int | None) -> tuple[int | None, str, str]:
    """(source line, original line, mutated line) of a mutant, from mutmut's copies of the function."""
    import libcst as cst  # mutmut's own parser, only needed (and installed) after a run
    from mutmut.mutation.diff_apply import (
        read_functions_from_index, read_mutant_function, read_mutants_module, read_original_function,
    )

    functions = read_functions_from_index(mutant.name, mutant.path)
    if functions is None:
        module = read_mutants_module(mutant.path)
        functions = (read_original_function(module, mutant.name), read_mutant_function(module, mutant.name))
    original, mutated = (cst.Module([f]).code.strip().split("\n") for f in functions)
    ops = [op for op in difflib.SequenceMatcher(None, original, mutated, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return def_line, "(no change)", "(no change)"
    _, i1, i2, j1, j2 = ops[0]
    removed = " / ".join(line.strip() for line in original[i1:i2]) or "(none)"
    added = " / ".join(line.strip() for line in mutated[j1:j2]) or "(removed)"
    # The function's text starts with its decorators and comments: count from its `def` line.
    def_index = next((i for i, text in enumerate(original) if text.lstrip().startswith(("def ", "async def "))), 0)
    line = def_line + i1 - def_index if def_line is not None else None
    return line, removed, added


def load_equivalents() -> dict[str, str]:
    equivalents: dict[str, str] = {}
    if EQUIVALENT_FILE.exists():
        for raw in EQUIVALENT_FILE.read_text().splitlines():
            if raw.strip() and not raw.lstrip().startswith("#"):
                name, _, mutated = raw.strip().partition(" ")
                equivalents[name] = mutated.strip()
    return equivalents


def is_literal_only(original: str, mutated: str) -> bool:
    """A survivor that changes only a string literal (cased, wrapped in XX, or replaced by None): in these
    modules that is a message's words or the label a message names, which the report counts apart so
    that the reviewer checks them as a group (a literal that is a key would be a behaviour survivor)."""
    def strings_out(text: str) -> str:
        return re.sub(r'f?"(?:[^"\\]|\\.)*"|f?\'(?:[^\'\\]|\\.)*\'', "S", text)
    before, after = strings_out(original), strings_out(mutated)
    return before == after or before.replace("S", "None", 1) == after


def wilson_interval(caught: int, tested: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a module's score estimated from a random sample of its mutants (Wilson's)."""
    p = caught / tested
    centre = (p + z * z / (2 * tested)) / (1 + z * z / tested)
    half = z * math.sqrt(p * (1 - p) / tested + z * z / (4 * tested * tested)) / (1 + z * z / tested)
    return 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants of modules below --below")
    parser.add_argument("--below", type=float, default=80.0, help="score (percent) under which survivors are listed")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="whose only_mutate to report")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = parser.parse_args()
    sample = set(SAMPLE_FILE.read_text().split()) if SAMPLE_FILE.exists() else None

    equivalents = load_equivalents()
    rows, totals, survivors_by_path = [], Counter(), {}
    for path in configured_files(args.pyproject):
        mutants = load_mutants(path)
        in_module = len(mutants)
        if sample is not None:
            mutants = [m for m in mutants if m.name in sample]
        if all(m.status == "not checked" for m in mutants):
            continue
        counts = Counter(m.status for m in mutants)
        defs = def_lines(path)
        equivalent = 0
        for m in mutants:
            if m.name in equivalents and m.status == "survived":
                _, _, mutated = describe(m, None)
                if mutated == equivalents[m.name]:
                    equivalent += 1
                    m.status = "equivalent"
                else:
                    print(f"warning: {m.name} in {EQUIVALENT_FILE} no longer mutates {equivalents[m.name]!r}; "
                          "judge it again", file=sys.stderr)
        # A survivor that only changes what a log call says (or drops the call) changes no behaviour a test
        # should pin: counted apart, like an equivalent mutant. pyproject's do_not_mutate_patterns keeps
        # newer runs from making them at all.
        log_only = 0
        for m in mutants:
            if m.status == "survived" and describe(m, None)[1].startswith(LOG_CALL):
                log_only += 1
                m.status = "log only"
        counts["log only"] = log_only
        counts["equivalent"] = equivalent
        counts["survived"] -= equivalent + log_only
        counts["mutants"] = len(mutants)
        counts["in module"] = in_module
        totals.update(counts)
        rows.append((str(path), counts))
        survivors_by_path[path] = [(m, defs) for m in mutants if m.status == "survived"]

    if not rows:
        print('no results in mutants/: run "mutmut run" first')
        return 1

    def score(c: Counter, caught: tuple[str, ...] = ("killed",)) -> float | None:
        tested = c["mutants"] - c["skipped"] - c["equivalent"] - c["log only"] - c["not checked"]
        return 100.0 * sum(c[k] for k in caught) / tested if tested else None

    def interval(c: Counter) -> str:
        tested = c["mutants"] - c["skipped"] - c["equivalent"] - c["log only"] - c["not checked"]
        if not tested or c["mutants"] == c["in module"]:
            return "whole"  # every mutant of the module tested: no sampling error
        low, high = wilson_interval(c["killed"], tested)
        return f"{low:.0f}-{high:.0f}%"

    columns = ["in module", "mutants", "killed", "survived", "timeout", "no tests", "equivalent", "log only", "other",
               "not checked"]
    width = max(len(name) for name, _ in rows + [("total", totals)])
    if args.markdown:
        print("| module | " + " | ".join(columns) + " | score | 95% interval | +timeout |")
        print("|---" * (len(columns) + 4) + "|")
    else:
        print(f"{'module':<{width}}  " + "  ".join(f"{c:>8}" for c in columns) + "     score  interval  +timeout")
    for name, c in rows + [("total", totals)]:
        s = score(c)
        if args.markdown:
            print(f"| {name} | " + " | ".join(str(c[col]) for col in columns)
                  + (f" | {s:.1f}% | {interval(c)} | {score(c, ('killed', 'timeout')):.1f}% |" if s is not None else " | - | - | - |"))
            continue
        print(f"{name:<{width}}  " + "  ".join(f"{c[col]:>8}" for col in columns)
              + (f"  {s:7.1f}%  {interval(c):>8}  {score(c, ('killed', 'timeout')):7.1f}%" if s is not None else "        -")
              + (" (partial)" if c["not checked"] else ""))
    print("score = killed / (mutants - skipped - equivalent - log only - not checked); +timeout counts a mutant that made the"
          " tests hang as caught too.\nA partial score comes from the mutants with the fastest tests, which mutmut"
          " runs first." + (f"\nSampled: {len(sample)} mutants drawn at random (mutants/.sample); the interval is the 95% Wilson"
          " interval of the module's score, 'whole' where every mutant of it was tested." if sample is not None else ""))

    if args.survivors:
        for name, c in rows:
            s = score(c)
            path = Path(name)
            if s is None or s >= args.below or not survivors_by_path[path]:
                continue
            described = []
            for m, defs in survivors_by_path[path]:
                cls, func = function_key(m.name)
                line, original, mutated = describe(m, defs.get((cls, func)))
                described.append((m, f"{cls}.{func}" if cls else func, line, original, mutated))
            wording = [d for d in described if is_literal_only(d[3], d[4])]
            print(f"\n## {name}: {s:.1f}%, {len(described)} surviving mutants, {len(wording)} of them only in a string literal")
            for m, where, line, original, mutated in described:
                tag = "  (string literal)" if (m, where, line, original, mutated) in wording else ""
                print(f"{m.name}  [{where}, line {line}]{tag}\n    - {original}\n    + {mutated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
