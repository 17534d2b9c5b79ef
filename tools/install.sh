#!/usr/bin/env bash
# Installs trainscale into a virtual environment (default .venv) on a fresh machine.
#   tools/install.sh [EXTRAS]      EXTRAS: comma-separated optional extras, e.g. dev,deepspeed,ray
# Every pip call is constrained by constraints.txt (PIP_CONSTRAINT also reaches build environments),
# so no dependency can replace the pinned CPU torch with a newer CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${1:-}
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.installed-${EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
"$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
