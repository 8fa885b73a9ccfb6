#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/gpu_<device>/, on a lent machine with PyTorch (CUDA) and no network:
#   bash benchmarks/gpu_session.sh OUT_DIR [DATA_DIR] [STEPS]
# DATA_DIR holds benchmark/Set5 and benchmark/Set14 (default ../shared/data); STEPS: which of students, compile,
# teachers (default all). Each step has its own time limit, and bench-gpu writes its results after every model,
# so a step that overruns keeps what it measured.
set -uo pipefail
OUT=${1:?output folder}; DATA=${2:-../shared/data}; STEPS=${3:-students compile teachers}
mkdir -p "$OUT"
SET5=$DATA/benchmark/Set5; SET14=$DATA/benchmark/Set14
STUDENTS="msrep-s-x2 msrep-m-x2 abpn-x2 zoo:msrep:size=l zoo:fsrcnn zoo:espcn zoo:rlfn zoo:span"
TEACHERS="zoo:edsr zoo:edsr_msa zoo:rdn zoo:rcan zoo:swinir"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
for step in $STEPS; do case $step in
students) timeout 300 edgesr bench-gpu $STUDENTS --set "$SET5" --settings fp32,fp32-cl,fp16,fp16-cl,fp16-cl-graph \
    --iterations 100 --max-seconds 1.5 --throughput-seconds 0.5 --out "$OUT/students" ;;
compile) timeout 150 edgesr bench-gpu msrep-s-x2 abpn-x2 --set "$SET5" --settings fp16-cl-compile,fp16-cl-compile-graph \
    --throughput-batch 0 --iterations 100 --max-seconds 1.5 --throughput-seconds 0.5 --out "$OUT/compile" ;;
teachers) timeout 150 edgesr bench-gpu $TEACHERS --settings fp32,fp16-cl --sizes 360x640 --throughput-batch 0 \
    --iterations 30 --max-seconds 1.5 --throughput-seconds 0.5 \
    --ntire zoo:rlfn:scale=4 --ntire-images "$SET14/LR_bicubic/X4" --out "$OUT/teachers" ;;
swinir) timeout 60 edgesr bench-gpu zoo:swinir --settings fp16-cl --sizes 360x640 --throughput-batch 0 \
    --iterations 30 --max-seconds 1.5 --throughput-seconds 0.5 --out "$OUT/swinir" ;;
esac; done
