#!/usr/bin/env bash
# Training stages of student recipes side by side on one lent GPU (PyTorch with CUDA, no network, 16 cores), as one
# call:   bash benchmarks/gpu_student_x2.sh OUT_DIR [RECIPE:STAGE ...]
# Default arms: student_gpu_x2.yaml's kd and hr (how the third msrep-s-x2 was trained). Each arm runs
# `edgesr run RECIPE --out runs/<recipe name>_<stage> --only STAGE` in its own run directory (with the stage's
# sampler workers); OUT_DIR/runs.tgz packs the run directories and logs. Needs the recipes' ../shared paths (a
# lent machine gets a carried copy in .gpu/shared, linked as ../shared) and, where missing, wheels in .whl.
set -uo pipefail
OUT=${1:?output folder}; shift
ARMS=${*:-benchmarks/recipes/student_gpu_x2.yaml:kd benchmarks/recipes/student_gpu_x2.yaml:hr}
PY=${PY:-python3}
mkdir -p "$OUT"
[ -e ../shared ] || ln -s "$PWD/.gpu/shared" ../shared
[ -d ../shared/data/train/photos ] || { echo "no ../shared/data/train/photos (and no .gpu/shared to link)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
[ -n "${NO_INSTALL:-}" ] || $PY -m pip install -q --no-deps --no-build-isolation --no-index . $(ls .whl/*.whl 2>/dev/null) >"$OUT/pip.txt" 2>&1 \
    || { echo "pip install failed"; cat "$OUT/pip.txt"; exit 1; }
arm() {  # RECIPE STAGE: -P keeps the checkout's edgesr/ folder from shadowing the installed package
    local name; name=$(sed -n 's/^name: *//p' "$1" | head -n 1)
    PYTHONUNBUFFERED=1 $PY -P -c 'import sys; from edgesr.cli import main; sys.exit(main(sys.argv[1:]))' \
        run "$1" --out "runs/${name}_$2" --only "$2" >"$OUT/${name}_$2.log" 2>&1
    echo "arm ${name}_$2: exit $? at $(date +%T)"
}
echo "start $(date +%T)"
dirs=()
for a in $ARMS; do
    recipe=${a%%:*}; stage=${a##*:}
    dirs+=("runs/$(sed -n 's/^name: *//p' "$recipe" | head -n 1)_$stage")
    arm "$recipe" "$stage" &
done
wait
tail -n 4 "$OUT"/*.log
tar czf "$OUT/runs.tgz" "${dirs[@]}" "$OUT"/*.log "$OUT/gpu.txt"
ls -la "$OUT"
