#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/gpu_<device>/, on a lent machine with PyTorch (CUDA) and no network:
#   bash benchmarks/gpu_session.sh OUT_DIR [DATA_DIR]
# DATA_DIR holds benchmark/Set5 and benchmark/Set14 (default ../shared/data). Each step has its own time limit, so
# one that overruns leaves the others' results.
set -uo pipefail
OUT=${1:?output folder}; DATA=${2:-../shared/data}
mkdir -p "$OUT"
SET5=$DATA/benchmark/Set5; SET14=$DATA/benchmark/Set14
STUDENTS="msrep-s-x2 msrep-m-x2 abpn-x2 zoo:msrep:size=l zoo:fsrcnn zoo:espcn zoo:rlfn zoo:span"
TEACHERS="zoo:edsr zoo:edsr_msa zoo:rdn zoo:rcan zoo:swinir"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
timeout 270 edgesr bench-gpu $STUDENTS --set "$SET5" --settings fp32,fp32-cl,fp16,fp16-cl,fp16-cl-graph \
    --iterations 100 --max-seconds 1.5 --throughput-seconds 0.5 --out "$OUT/students"
timeout 150 edgesr bench-gpu $TEACHERS --settings fp32,fp16-cl --sizes 360x640 --throughput-batch 0 \
    --iterations 30 --max-seconds 1.5 --throughput-seconds 0.5 \
    --ntire zoo:rlfn:scale=4 --ntire-images "$SET14/LR_bicubic/X4" --out "$OUT/teachers"
