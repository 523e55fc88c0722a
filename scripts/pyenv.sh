#!/usr/bin/env bash
# Creates (once) the Python environment used for reference values and side-by-side benchmarks,
# and prints the path of its python. The venv lives outside the clone so CI and later runs reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${KAIABC_VENV:-$HOME/.cache/kaiabc/venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
