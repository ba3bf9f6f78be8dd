"""`python -m tests.chaos --cycles N [--data-dir D] [--seed S]`: the long chaos run; prints the report as JSON
and exits 1 if it misses a pass criterion."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import failures, run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="quiver-chaos-"))
    report = asyncio.run(run_chaos(data_dir, args.cycles, args.seed, log=lambda line: print(line, file=sys.stderr, flush=True)))
    missed = failures(report)
    report["failures"] = missed
    print(json.dumps(report, indent=2, default=str))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
