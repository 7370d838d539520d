#!/usr/bin/env bash
# Prepares a machine that has only Python 3.11 or 3.12: a C compiler and Python headers (durable_rules
# is built from source), and, with --test, a redis-server binary, Debian's chromium (the console's
# browser tests drive it headless through Playwright, which never downloads a browser) and wrk (the load
# generator of tests/benchmarks/bench_operator.py). Installs with apt-get only what is missing, then
# creates .venv with the project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

want_redis=0
[ "${1:-}" = "--test" ] && want_redis=1

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or 3.12 is needed (durable_rules does not import on 3.13)" >&2
  return 1
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: please install: $* (no apt-get on this machine)" >&2; exit 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing with apt-get: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

PY=$(pick_python)
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ! "$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)'; then
  missing+=("$(basename "$PY")-dev")
fi
"$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=("$(basename "$PY")-venv")
if [ "$want_redis" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
# redis-cli joins the Redis Cluster the tests start (Debian's redis-server brings it along)
if [ "$want_redis" = 1 ] && command -v redis-server >/dev/null 2>&1 && ! command -v redis-cli >/dev/null 2>&1; then
  missing+=(redis-tools)
fi
if [ "$want_redis" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
if [ "$want_redis" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
  missing+=(wrk)
fi
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # durable_rules' setup.py compiles its C core at -O0; -O2 makes evaluations 15-22 % faster. Built
  # apart and without the wheel cache, so an -O0 wheel cached by another install is never reused.
  CC="gcc -O2" .venv/bin/python -m pip install -q --no-cache-dir "durable-rules==2.0.28"
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
