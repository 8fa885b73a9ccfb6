"""This machine's CPU: its model name and instruction-set flags, read once from /proc/cpuinfo (empty elsewhere).
The benchmark records them with every measurement; the prune stage's ``round_to: kernel`` reads the vector
width from them."""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_model_and_flags", "nchwc_block", "u8s8_saturates", "INT8_DOT_FLAGS"]


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    cpu, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not cpu.strip(" x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
                if cpu and flags:
                    break
    except OSError:
        pass
    return cpu, frozenset(flags)


def nchwc_block() -> int:
    """The channel block of ONNX Runtime's NCHWc convolution kernels (MLAS) on this CPU: 16 with AVX-512F, 8 with
    AVX2 or NEON, else 4."""
    flags = cpu_model_and_flags()[1]
    return 16 if "avx512f" in flags else 8 if flags & {"avx2", "asimd"} else 4


INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""x86 instruction sets with an 8-bit dot product that accumulates into 32 bits (VNNI, AMX)."""


def u8s8_saturates(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU's INT8 convolutions (ONNX Runtime's MLAS and OpenVINO's kernels alike) multiply uint8
    activations by int8 weights with ``vpmaddubsw``, which adds two products into a saturating int16: an x86 CPU
    with SSSE3/AVX2/AVX-512 but no VNNI/AMX. There ``a1*w1 + a2*w2`` above 32,767 is clipped (255 x 127 x 2 =
    64,770 is reachable with 8-bit weights; 255 x 64 x 2 = 32,640 is not with 7-bit ones). Measured on such a
    host (AMD EPYC, AVX2 only; ``benchmarks/results/int8_host``): the shipped 8-bit INT8 students lost 0.19 to
    1.48 dB there against the same files on a VNNI host. Not x86 (Arm and others): False."""
    if flags is None:
        flags = cpu_model_and_flags()[1]
    x86 = bool(flags & {"sse2", "ssse3", "avx", "avx2"})  # x86 /proc/cpuinfo flags; Arm lists asimd, neon
    return x86 and not (flags & INT8_DOT_FLAGS)
