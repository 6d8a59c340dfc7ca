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
# optional extra for av_hubert's --video-crop mouth (MTCNN, weights in the wheel); --no-deps because its
# metadata pins torch<2.3 and numpy<2, while its detector runs on these
mouth="facenet-pytorch==2.6.0"
want="$( { cat "$here/pyproject.toml"; echo "$mouth"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$mouth"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
