#!/usr/bin/env bash
# Prepares what the GPU check (benchmarks/gpu_check.sh) carries to a GPU machine without network.
# Run from anywhere, on a machine with network and aetdask's environment active (its Python finds
# the versions to download):
#
#   bash benchmarks/gpu_prepare.sh [SEED_DIR]
#
# .whl/       wheels, for CPython 3.12 on manylinux x86-64, of every dependency the GPU machines
#             lack (`python benchmarks/gpu_check.py --wheels` lists them, at the versions installed here)
# .gpu-data/  the seed paper's 208-atom Si series (1.6e4 e⁻/Å²), its angles and its ground truth
#             (SEED_DIR, default ../shared/reference/seed-paper beside the repository)
# Both folders are in .gitignore: they are carried, never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
seed=${1:-../shared/reference/seed-paper}

rm -rf .whl && mkdir -p .whl .gpu-data
"$PY" benchmarks/gpu_check.py --wheels > .whl/wanted.txt
platforms=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# one call per wheel: --no-deps fetches exactly the listed version of each (the list is the closure)
while read -r req; do
    PIP_CONSTRAINT= "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl "$req" 2> >(grep -v "^WARNING: Location" >&2) || { echo "no wheel for $req (Python 3.12, manylinux x86-64)" >&2; exit 1; }
done < .whl/wanted.txt
rm .whl/wanted.txt

for f in aSi_2nmFosCetr_Dose1p6e4_cov35pm_ForBM3D.mat Si_Angle.mat aSi_208atoms_GT.txt; do
    cp "$seed/$f" .gpu-data/
done
echo "wheels: $(ls .whl/*.whl | wc -l), $(du -sh .whl | cut -f1); seed data: $(du -sh .gpu-data | cut -f1)"
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu-data | tail -1 | cut -f1)
echo "the working tree ($((tree >> 20)) MiB) and the carried folders ($((carried >> 20)) MiB) travel together: 64 MiB at most"
[ $((tree + carried)) -lt $((62 << 20)) ] || { echo "too large to travel" >&2; exit 1; }
