#!/usr/bin/env bash
# The real `geotessera` clients the interoperability tests run against, each in its own venv
# (outside .venv: their dependencies must not shape ours):
#   .venv-geotessera/0.7.5   Python 3.11 (the newest geotessera that installs under 3.11)
#   .venv-geotessera/0.11.0  Python 3.12 (geotessera >= 0.8 needs it; found as python3.12 on
#                            PATH or under pyenv; without one that client's tests skip, saying so)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=.venv-geotessera
mkdir -p "$ROOT"

install() {  # install VERSION PYTHON
  local dir="$ROOT/$1"
  if [ -f "$dir/.installed" ]; then return; fi
  rm -rf "$dir"
  "$2" -m venv "$dir"
  # (this machine's pip configuration warns about every absent local index: not shown)
  "$dir/bin/pip" install -q "geotessera==$1" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  test "${PIPESTATUS[0]}" -eq 0
  "$dir/bin/python" -c "import geotessera; assert geotessera.__version__ == '$1'"
  touch "$dir/.installed"
}

install 0.7.5 "${PYTHON:-python3}"
PY312=""
for p in "${PYTHON312:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
         "$(command -v python3.12 || true)"; do
  if [ -n "$p" ] && "$p" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then
    PY312=$p && break
  fi
done
if [ -n "$PY312" ]; then
  install 0.11.0 "$PY312"
else
  echo "install: no Python 3.12 found: the tests against geotessera 0.11.0 will skip"
fi
