#!/usr/bin/env bash
# Steps per second of one distillation arm on a lent GPU, alone, in four settings of 60 s each (issue 26's lesson:
# three arms with 4 spawned sampler workers each trained 11-12 steps/s on an H200, one arm in-process 24; see
# benchmarks/results/gpu_h200_x2). Run it first on the next lent GPU, as one call (carry .gpu, .whl,
# runs/deep_cpu_x2_b4/b4_long):   bash benchmarks/gpu_throughput_probe.sh OUT_DIR
# Prints and writes OUT_DIR/throughput.md: workers 0 / 2 / 6 at batch 32, and workers 0 at batch 128 (seconds: the
# stage's, the sampler pool's start included). DEVICE=cpu MINUTES=0.2 NO_INSTALL=1 PY=.venv/bin/python tries it here.
set -uo pipefail
OUT=${1:?output folder}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-1.0}
mkdir -p "$OUT" runs/probe
[ -e ../shared ] || ln -s "$PWD/.gpu/shared" ../shared
[ -n "${NO_INSTALL:-}" ] || $PY -m pip install -q --no-deps --no-build-isolation --no-index . \
    $(ls .whl/*.whl 2>/dev/null) >"$OUT/pip.txt" 2>&1 || { echo "pip install failed"; cat "$OUT/pip.txt"; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
echo "| workers | batch | steps | seconds | steps/s | patches/s |" >"$OUT/throughput.md"
echo "|---|---|---|---|---|---|" >>"$OUT/throughput.md"
for setting in "0 32" "2 32" "6 32" "0 128"; do
    set -- $setting
    name="probe_w$1_b$2"
    sed -e "s/^name: .*/name: $name/" -e "s/workers: [0-9]*, max_minutes: [0-9.]*/workers: $1, max_minutes: $MINUTES/" \
        -e "s/batch_size: 32/batch_size: $2/" -e "s/device: cuda/device: $DEVICE/" \
        benchmarks/recipes/s4_gpu_x2.yaml >"runs/probe/$name.yaml"
    PYTHONUNBUFFERED=1 $PY -P -c 'import sys; from edgesr.cli import main; sys.exit(main(sys.argv[1:]))' \
        run "runs/probe/$name.yaml" --out "runs/probe/$name" --only kd >"$OUT/$name.log" 2>&1
    $PY -P -c '
import re, sys, torch
log, ckpt, workers, batch = sys.argv[1:5]
step = torch.load(ckpt, map_location="cpu", weights_only=False)["step"]
secs = float(re.search(r"kd: ran in ([0-9.]+) s", open(log).read()).group(1))
print(f"| {workers} | {batch} | {step} | {secs:.0f} | {step / secs:.1f} | {step * int(batch) / secs:.0f} |")
' "$OUT/$name.log" "runs/probe/$name/kd.ckpt/last.pt" "$1" "$2" >>"$OUT/throughput.md" \
        || echo "| $1 | $2 | failed: see $name.log | | | |" >>"$OUT/throughput.md"
done
cat "$OUT/throughput.md"
