#!/usr/bin/env bash
# The test suite (pytest), in the project's virtual environment.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$here"
exec python -m pytest "$@"
