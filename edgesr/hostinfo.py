"""This machine's CPU: its model name and instruction-set flags, read once from /proc/cpuinfo (empty elsewhere).
The benchmark records them with every measurement; the prune stage's ``round_to: kernel`` reads the vector
width from them."""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_model_and_flags", "nchwc_block"]


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
