#!/usr/bin/env bash
# The GPU half of benchmarks/recipes/student_gpu_x2.yaml as one call on a lent machine (PyTorch with CUDA, no
# network, 16 cores):   bash benchmarks/gpu_student_x2.sh OUT_DIR [RECIPE]
# Needs ../shared/data/train/photos and ../shared/weights/imdn_x2.pth (the recipe's paths; a lent machine gets a
# carried copy in .gpu/shared, linked as ../shared). Trains the arms `kd` and `hr` side by side, each in its own run
# directory with its own sampler workers, and packs both directories and their logs into OUT_DIR/runs.tgz.
set -uo pipefail
OUT=${1:?output folder}; RECIPE=${2:-benchmarks/recipes/student_gpu_x2.yaml}; PY=${PY:-python3}
mkdir -p "$OUT"
[ -e ../shared ] || ln -s "$PWD/.gpu/shared" ../shared
[ -d ../shared/data/train/photos ] || { echo "no ../shared/data/train/photos (and no .gpu/shared to link)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
[ -n "${NO_INSTALL:-}" ] || $PY -m pip install -q --no-deps --no-build-isolation --no-index . $(ls .whl/*.whl 2>/dev/null) >"$OUT/pip.txt" 2>&1 \
    || { echo "pip install failed"; cat "$OUT/pip.txt"; exit 1; }
arm() {
    PYTHONUNBUFFERED=1 $PY -P -c 'import sys; from edgesr.cli import main; sys.exit(main(sys.argv[1:]))' \
        run "$RECIPE" --out "runs/student_gpu_x2_$1" --only "$1" >"$OUT/$1.log" 2>&1
    echo "arm $1: exit $? at $(date +%T)"
}
echo "start $(date +%T)"
arm kd & arm hr & wait
tail -n 4 "$OUT"/kd.log "$OUT"/hr.log
tar czf "$OUT/runs.tgz" runs/student_gpu_x2_kd runs/student_gpu_x2_hr "$OUT"/*.log "$OUT/gpu.txt"
ls -la "$OUT"
