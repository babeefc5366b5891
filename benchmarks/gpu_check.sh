#!/usr/bin/env bash
# The prepared GPU check: one command on a GPU machine without network (Python 3.12, CuPy installed).
#
#   bash benchmarks/gpu_prepare.sh         # first, where there is network: fills .whl/ and .gpu-data/
#   bash benchmarks/gpu_check.sh [SEED_DIR] # then on the GPU machine, from a copy of the tree that
#                                           # carries .whl/ and .gpu-data/ (SEED_DIR default .gpu-data)
#
# Installs the carried wheels into a folder of their own (no network, no dependency resolution), puts
# the tree itself on PYTHONPATH (aetdask needs no build step), then runs benchmarks/gpu_check.py:
# every part with its own time budget, about 8 minutes in all, the install included. The summary
# goes to $OUT/gpu_check.json (rewritten as each part finishes) and the log to $OUT/gpu_check.log
# ($OUT defaults to ./gpu-check-out). Exit status 0 when every part ran and the tests passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
export OUT
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TOTAL=${GPU_CHECK_SECONDS:-480}
site=${TMPDIR:-/tmp}/aetdask-site
start=$(date +%s)
{
    echo "== $(date -u +%FT%TZ) $(uname -n); $($PY --version 2>&1)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    if compgen -G ".whl/*.whl" >/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
            && echo "installed $(ls .whl/*.whl | wc -l) wheels into $site" || echo "wheel install FAILED"
    else
        echo "no .whl/ carried: using what the machine has"
    fi
} >>"$OUT/gpu_check.log" 2>&1
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
installed=$(( $(date +%s) - start ))
exec $PY benchmarks/gpu_check.py --device gpu --out "$OUT" --seed-dir "${1:-.gpu-data}" \
    --budget $(( TOTAL - installed - 15 )) --install-seconds "$installed"
