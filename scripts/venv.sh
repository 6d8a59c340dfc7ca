# Sourced by demo.sh and test.sh: create or reuse ./.venv with avsuperb installed (editable) and its test extras.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv (first run: installs torch and friends, a few minutes)" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.avsuperb-install"
want="$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
