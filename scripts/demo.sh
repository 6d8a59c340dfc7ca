#!/usr/bin/env bash
# The main job on the built-in synthetic corpus: extract FBANK and HoG, probe every task, print results.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$here"
exec avsuperb-demo "$@"
