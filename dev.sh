#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv (Python 3.11) when missing, installs
# kerasface with its test extras at the tested versions of constraints.txt, then runs the job.
#   ./dev.sh demo   train, evaluate and export the canal_mtfl recipe on the built-in demo data
#   ./dev.sh test   run the test suite (what CI runs)
#   ./dev.sh lock   re-resolve the newest versions pyproject.toml allows into constraints.txt
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: kerasface needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local stamp="$VENV/.kerasface-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints.txt ]; then
    return 0
  fi
  make_venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet -e ".[test]" -c constraints.txt
  touch "$stamp"
}

make_venv() {  # make_venv DIR: a virtual environment with a current pip
  if [ ! -x "$1/bin/python" ]; then
    local py; py=$(pick_python)
    "$py" -m venv "$1" || { echo "error: '$py -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
  fi
  "$1/bin/python" -m pip install --quiet --upgrade pip
}

lock() {  # resolve afresh in a throwaway venv; constraints.txt is replaced only once complete
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  make_venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install --quiet -e ".[test]"
  { sed -n '/^#/p' constraints.txt; "$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > constraints.txt.partial
  mv constraints.txt.partial constraints.txt
  echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages; run ./dev.sh test before committing it"
}

case "${1:-}" in
  demo)
    ensure_venv
    shift
    # --demo ends with the exports: models/canal_mtfl_demo/<version>/, canal_mtfl_demo.tflite, -int8.tflite
    "$VENV/bin/python" -m kerasface.train --paper=canal_mtfl --demo --run-dir runs/canal_mtfl-demo "$@"
    ;;
  test)
    ensure_venv
    shift
    # test files spread over worker processes (pytest-xdist): much of the suite is single-threaded
    # graph tracing, so 2 workers use both cores; KERASFACE_TEST_WORKERS=0 runs in one process
    "$VENV/bin/python" -m pytest -q -n "${KERASFACE_TEST_WORKERS:-2}" --dist loadfile "$@"
    ;;
  lock)
    lock
    ;;
  *)
    echo "usage: ./dev.sh demo | test [extra args] | lock" >&2
    exit 2
    ;;
esac
