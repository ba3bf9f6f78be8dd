#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut, by hand (never in CI): each mutant is one small change to
# one function (an operator, a constant, a dropped argument); the fast tests (tests/unit, tests/integration)
# run against it and should fail. What is mutated and which tests run is [tool.mutmut] in pyproject.toml.
#
#   bash scripts/mutation.sh                              # every configured module
#   bash scripts/mutation.sh router.hashring shard.wal    # only these modules (a package: shard.indexes)
#   bash scripts/mutation.sh --head ...                   # the committed tree (HEAD), not this checkout
#   bash scripts/mutation.sh --fresh ...                  # forget earlier results (otherwise a run resumes)
#   bash scripts/mutation.sh --report                     # only print the table from the last results
#   bash scripts/mutation.sh --sample 60 ...              # at most 60 mutants per module, drawn at random
#
# mutmut runs in a copy of this checkout (tracked and untracked, not ignored, files; with --head, of HEAD) in
# $MUTATION_DIR (default /tmp/quiver-mutation-tree or -head), kept between runs so that they resume: mutmut
# only tests mutants it has no result for, including after a run that was stopped. The copy keeps others'
# edits and mutmut's mutants/ out of this checkout, and --head keeps a half-written test out of the run (one
# failing test in the unmutated suite stops mutmut before it tests a single mutant). Naming modules narrows
# only_mutate in the copy's pyproject.toml; the table always covers every configured module that has results.
#
# --sample N tests a seeded random sample (MUTATION_SEED, default 1) of each module's mutants, all of a module
# with N or fewer: a whole run (about 4,200 mutants) takes longer than a working session on 2 cores, and a
# sample's score estimates the module's (the report gives its 95% interval).
#
# Env: MUTATION_CHILDREN (mutants tested in parallel, default 1), MUTATION_TIMEOUT (seconds for the whole
# run; it stops cleanly and keeps its results). mutmut forks one pytest session per mutant, so each session
# starts its own etcd (tests/conftest.py); they all live under a private TMPDIR, and any etcd that a session
# killed for a timeout left behind is stopped here, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

repo=$PWD
PY=$repo/.venv/bin/python
fresh=0
head=0
report_only=0
sample=0
modules=()
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    --head) head=1 ;;
    --report) report_only=1 ;;
    --sample) sample=-1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) if [[ $sample == -1 ]]; then sample=$arg; else modules+=("$arg"); fi ;;
  esac
done

if [[ $head == 1 ]]; then work=${MUTATION_DIR:-/tmp/quiver-mutation-head}; else work=${MUTATION_DIR:-/tmp/quiver-mutation-tree}; fi

if [[ $report_only == 0 ]]; then
  if ! "$PY" -c "import mutmut" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[mutation]"
  fi

  mkdir -p "$work"
  if [[ $fresh == 1 ]]; then rm -rf "$work/mutants"; fi
  find "$work" -mindepth 1 -maxdepth 1 ! -name mutants -exec rm -rf {} +
  if [[ $head == 1 ]]; then
    git archive HEAD | tar -x -C "$work"
    echo "testing HEAD $(git rev-parse --short HEAD) in $work"
  else
    git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -c 2>/dev/null | tar -x -C "$work"
    echo "testing this checkout (HEAD $(git rev-parse --short HEAD) and its edits) in $work"
  fi
  if (( ${#modules[@]} )); then
    "$PY" - "$work/pyproject.toml" "${modules[@]}" <<'EOF'
import re, sys
from pathlib import Path
path, names = Path(sys.argv[1]), sys.argv[2:]
patterns = []
for name in names:
    base = name.replace(".", "/")
    if Path(path.parent, base).is_dir():
        patterns.append(f"{base}/*")
    elif Path(path.parent, base + ".py").is_file():
        patterns.append(base + ".py")
    else:
        sys.exit(f"no module {name}")
text, count = re.subn(r"(?ms)^only_mutate = \[.*?^\]", "only_mutate = " + repr(patterns).replace("'", '"'),
                      path.read_text())
if count != 1:
    sys.exit("no only_mutate in [tool.mutmut]")
path.write_text(text)
EOF
  fi
  cd "$work"
  # A run narrowed to some modules copies the others into mutants/ unmutated, over their mutants, and keeps
  # only its own modules' test coverage in mutmut-stats.json. So each run keeps the other modules' mutants
  # aside and puts them back afterwards (the report reads them), and a run whose selection differs from the
  # last one's drops the coverage, which mutmut then measures again (a few minutes); results are kept.
  selection="${modules[*]:-all}"
  if [[ -f mutants/.selection && $(cat mutants/.selection) != "$selection" ]]; then rm -f mutants/mutmut-stats.json; fi
  # A change of [tool.mutmut]'s test selection or pytest arguments makes mutmut drop every verdict; with the
  # coverage dropped instead, it measures that again and keeps the verdicts (a kill stays a kill).
  tests_config=$("$PY" -c 'import tomllib; c = tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]; print(c.get("pytest_add_cli_args_test_selection"), c.get("pytest_add_cli_args"))')
  if [[ -f mutants/.tests && $(cat mutants/.tests) != "$tests_config" ]]; then rm -f mutants/mutmut-stats.json; fi
  mkdir -p mutants && echo "$selection" > mutants/.selection && echo "$tests_config" > mutants/.tests
  keep_mutants() {
    "$PY" - "$1" <<'EOF'
import json, shutil, sys
from pathlib import Path
for meta in Path("mutants").rglob("*.py.meta"):
    mutated, kept = meta.with_suffix(""), meta.with_suffix(".keep")
    if not json.loads(meta.read_text())["exit_code_by_key"]:
        continue
    has_mutants = mutated.exists() and "__mutmut_" in mutated.read_text()
    if sys.argv[1] == "aside" and has_mutants:
        shutil.copy2(mutated, kept)
    elif sys.argv[1] == "back" and kept.exists():
        if not has_mutants:
            shutil.copy2(kept, mutated)
        kept.unlink()
    elif sys.argv[1] == "back" and mutated.exists() and not has_mutants:
        mutated.unlink()  # lost: newer than its source, mutmut would take it for its mutants; generate again
EOF
  }
  keep_mutants back  # after a run that was killed before it could
  keep_mutants aside
  # mutmut keeps every verdict until the mutated function changes, so a test added since would never get to
  # kill an old survivor: test the selected modules' survivors (and no-tests) again; kills stay kills.
  "$PY" - <<'EOF'
import json, tomllib
from fnmatch import fnmatch
from pathlib import Path
patterns = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
for meta in Path("mutants").rglob("*.py.meta"):
    if not any(fnmatch(str(meta.relative_to("mutants").with_suffix("")), p) for p in patterns):
        continue
    data = json.loads(meta.read_text())
    codes = data["exit_code_by_key"]
    for name, code in codes.items():
        if code in (0, 5, 33):
            codes[name] = None
    meta.write_text(json.dumps(data, indent=4))
EOF

  work_tmp=$(mktemp -d /tmp/quiver-mutation-tmp.XXXXXX)
  # etcd servers that the tests of this run started (their --data-dir lies under work_tmp); with "orphans",
  # only those whose pytest session is gone (it was killed for a timeout and could not stop them).
  our_etcds() {
    local pid cmd parent
    for pid in $(pgrep -x etcd || true); do
      cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
      [[ $cmd == *"$work_tmp/"* ]] || continue
      if [[ ${1:-} == orphans ]]; then
        parent=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
        tr '\0' ' ' < "/proc/$parent/cmdline" 2>/dev/null | grep -q mutmut && continue
      fi
      echo "$pid"
    done
  }
  reaper_pid=
  cleanup() {
    keep_mutants back
    if [[ -n $reaper_pid ]]; then kill "$reaper_pid" 2>/dev/null || true; fi
    local pid
    for pid in $(our_etcds); do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work_tmp"
  }
  trap cleanup EXIT
  ( while sleep 30; do for pid in $(our_etcds orphans); do kill "$pid" 2>/dev/null || true; done; done ) &
  reaper_pid=$!

  names=()
  if (( sample > 0 )); then
    # mutmut names its mutants only once it has generated them: generate them here (what `mutmut run` does
    # first, and then finds done), and draw the sample from each selected module's list.
    TMPDIR=$work_tmp "$PY" "$repo/scripts/mutation_sample.py" "$sample" "${MUTATION_SEED:-1}" > "$work_tmp/names"
    mapfile -t names < "$work_tmp/names"
    echo "testing ${#names[@]} mutants of a sample of at most $sample per module (seed ${MUTATION_SEED:-1})"
  else
    rm -f mutants/.sample
  fi

  start=$(date +%s)
  run=("$repo/.venv/bin/mutmut" run --max-children "${MUTATION_CHILDREN:-1}")
  if [[ -n ${MUTATION_TIMEOUT:-} ]]; then run=(timeout --signal=INT --kill-after=60 "$MUTATION_TIMEOUT" "${run[@]}"); fi
  status=0
  if (( sample > 0 && ${#names[@]} == 0 )); then
    echo "every sampled mutant has its verdict"
  else
    TMPDIR=$work_tmp "${run[@]}" "${names[@]}" || status=$?
  fi
  echo
  echo "mutmut exited with $status after $(( ($(date +%s) - start) / 60 )) min"
  keep_mutants back  # before the report, which reads every module's mutants (the EXIT trap would be too late)
fi

cd "$work"
"$PY" "$repo/scripts/mutation_report.py" --pyproject "$repo/pyproject.toml" --survivors --below 80
