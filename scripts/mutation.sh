#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut, by hand (never in CI): each mutant is one small change to
# one function (an operator, a constant, a dropped argument); the fast tests (tests/unit, tests/integration)
# run against it and should fail. What is mutated and which tests run is [tool.mutmut] in pyproject.toml.
#
#   bash scripts/mutation.sh                                  # every configured module; resumes an unfinished run
#   bash scripts/mutation.sh router.hashring shard.wal_codec  # only these modules (always re-tested)
#   bash scripts/mutation.sh --fresh ...                      # drop mutants/ first (after the code or tests moved)
#   bash scripts/mutation.sh --head ...                       # the committed tree, not this checkout's edits
#   bash scripts/mutation.sh --report                         # only print the table from the last results
#
# --head runs in a copy of HEAD (git archive) in $MUTATION_HEAD_DIR (default /tmp/quiver-mutation-head, kept
# between runs so they resume), so uncommitted code or half-written tests in this checkout cannot make the
# unmutated suite fail, which stops mutmut before it tests a single mutant. Its results are reported there.
#
# Env: MUTATION_CHILDREN (default 1: mutants in parallel), MUTATION_TIMEOUT (seconds for the whole run, default
# none). mutmut forks one pytest session per mutant from a copy of the code in mutants/, so each session starts
# its own etcd (tests/conftest.py); they all live under a private TMPDIR, and any etcd a killed (timed-out)
# session left behind is stopped here by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

repo=$PWD
PY=$repo/.venv/bin/python
fresh=0
head=0
report_only=0
modules=()
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    --head) head=1 ;;
    --report) report_only=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) modules+=("$arg.*") ;;
  esac
done

if [[ $report_only == 0 ]]; then
  if ! "$PY" -c "import mutmut" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[mutation]"
  fi
fi
if [[ $head == 1 ]]; then
  head_dir=${MUTATION_HEAD_DIR:-/tmp/quiver-mutation-head}
  if [[ $report_only == 0 ]]; then
    mkdir -p "$head_dir"
    find "$head_dir" -mindepth 1 -maxdepth 1 ! -name mutants -exec rm -rf {} +
    git archive HEAD | tar -x -C "$head_dir"
  fi
  cd "$head_dir"
  echo "testing HEAD $(git -C "$repo" rev-parse --short HEAD) in $head_dir"
fi
if [[ $report_only == 0 ]]; then
  if [[ $fresh == 1 ]]; then rm -rf mutants; fi

  work_tmp=$(mktemp -d /tmp/quiver-mutation.XXXXXX)
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
    [[ -n $reaper_pid ]] && kill "$reaper_pid" 2>/dev/null || true
    local pid
    for pid in $(our_etcds); do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work_tmp"
  }
  trap cleanup EXIT
  ( while sleep 30; do for pid in $(our_etcds orphans); do kill "$pid" 2>/dev/null || true; done; done ) &
  reaper_pid=$!

  start=$(date +%s)
  run=("$repo/.venv/bin/mutmut" run --max-children "${MUTATION_CHILDREN:-1}" "${modules[@]}")
  if [[ -n ${MUTATION_TIMEOUT:-} ]]; then run=(timeout --signal=INT --kill-after=60 "$MUTATION_TIMEOUT" "${run[@]}"); fi
  status=0
  TMPDIR=$work_tmp "${run[@]}" || status=$?
  echo
  echo "mutmut exited with $status after $(( ($(date +%s) - start) / 60 )) min"
fi

"$PY" scripts/mutation_report.py --survivors --below 80
