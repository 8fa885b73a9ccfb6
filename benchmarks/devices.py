"""The device a measurement ran on, and its power: NVIDIA desktop/data-centre GPUs through NVML, Jetson boards
through their board model, power mode (``nvpmodel -q``), clock state and ``tegrastats``.

Everything here degrades to "not present" with the reason: a CPU-only host reports its CPU (model and
instruction sets, from :func:`edgesr.benchmarks.latency.machine_info`) and no GPU; a Jetson without locked
clocks gets a warning, because unlocked clocks (DVFS) make timings unstable (``sudo jetson_clocks``).

Power samplers run in a thread while a timed loop runs and report average watts and millijoules per frame:
:class:`NvmlPowerSampler` (``nvmlDeviceGetPowerUsage``, milliwatts, desktop GPUs) and
:class:`TegrastatsSampler` (the ``tegrastats`` tool's rails: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC on Orin;
VDD_IN/VDD_CPU_GPU_CV/VDD_SOC or GPU/CPU/SOC on Xavier; POM_5V_IN/POM_5V_GPU/POM_5V_CPU on Nano and TX1/TX2).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

__all__ = ["parse_tegrastats", "TegrastatsSampler", "NvmlPowerSampler", "jetson_info", "gpu_info", "device_info",
           "device_label"]

_RAIL = re.compile(r"\b((?:VDD|POM)_[A-Z0-9_]+|GPU|CPU|SOC|CV|VDDRQ|SYS5V)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")
_GR3D = re.compile(r"GR3D_FREQ\s+(\d+)%(?:@\[?([\d,]+)\]?)?")
_RAM = re.compile(r"RAM\s+(\d+)/(\d+)MB")
_EMC = re.compile(r"EMC_FREQ\s+(\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z0-9_]+)@(-?\d+(?:\.\d+)?)C\b")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
"""The rail that measures the whole module's input power, by board generation."""


def parse_tegrastats(line: str) -> dict:
    """One ``tegrastats`` line -> {rails_mw: {name: (instant, average)}, input_mw, gpu_load_pct, gpu_mhz, ram_mb,
    ram_total_mb, emc_load_pct, temps_c}. Rails print ``instant/average`` in mW (Orin, L4T r35+: with the unit;
    Nano/TX2/Xavier, r32: without)."""
    rails = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _RAIL.finditer(line)}
    out: dict = {"rails_mw": rails, "input_mw": None, "gpu_load_pct": None, "gpu_mhz": None, "ram_mb": None,
                 "ram_total_mb": None, "emc_load_pct": None,
                 "temps_c": {k: float(v) for k, v in _TEMP.findall(line)}}
    for name in INPUT_RAILS:
        if name in rails:
            out["input_mw"] = rails[name][0]
            break
    if (m := _GR3D.search(line)):
        out["gpu_load_pct"] = int(m.group(1))
        if m.group(2):
            out["gpu_mhz"] = int(m.group(2).split(",")[0])
    if (m := _RAM.search(line)):
        out["ram_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if (m := _EMC.search(line)):
        out["emc_load_pct"] = int(m.group(1))
    return out


def _summarise_power(samples_mw: list[float], frames: int | None, seconds: float) -> dict:
    if not samples_mw:
        return {"samples": 0}
    avg_w = sum(samples_mw) / len(samples_mw) / 1e3
    res = {"samples": len(samples_mw), "average_w": round(avg_w, 3), "max_w": round(max(samples_mw) / 1e3, 3),
           "seconds": round(seconds, 3)}
    if frames:
        res["mj_per_frame"] = round(avg_w * seconds / frames * 1e3, 3)
    return res


class TegrastatsSampler:
    """Run ``tegrastats --interval MS`` during a timed loop (``with`` block) and parse every line; ``summary``
    gives the input rail's average power, mJ per frame, GPU load and peak RAM. ``command`` overrides the
    tool (tests feed it recorded lines)."""

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None):
        self.interval_ms = interval_ms
        tool = shutil.which("tegrastats")
        self.command = command or ([tool, "--interval", str(interval_ms)] if tool else None)
        self.lines: list[dict] = []
        self._proc = None
        self._thread = None
        self._t0 = self._t1 = 0.0

    @property
    def available(self) -> bool:
        return self.command is not None

    def __enter__(self) -> "TegrastatsSampler":
        if self.command is None:
            return self
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read():
            for line in self._proc.stdout:
                if line.strip():
                    self.lines.append(parse_tegrastats(line))
        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._t1 = time.perf_counter()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._thread.join(timeout=2)

    def summary(self, frames: int | None = None) -> dict:
        if self.command is None:
            return {"samples": 0, "why": "tegrastats not found (not a Jetson, or not on PATH)"}
        power = [ln["input_mw"] for ln in self.lines if ln["input_mw"] is not None]
        res = _summarise_power(power, frames, self._t1 - self._t0)
        loads = [ln["gpu_load_pct"] for ln in self.lines if ln["gpu_load_pct"] is not None]
        rams = [ln["ram_mb"] for ln in self.lines if ln["ram_mb"] is not None]
        res.update({"source": "tegrastats", "gpu_load_pct_mean": round(sum(loads) / len(loads), 1) if loads else None,
                    "ram_mb_peak": max(rams) if rams else None,
                    "rails": sorted({k for ln in self.lines for k in ln["rails_mw"]})})
        return res


class NvmlPowerSampler:
    """Sample the GPU's board power through NVML every ``interval_s`` in a thread during a timed loop.
    ``nvml``: the ``pynvml`` module (``nvidia-ml-py``) or a stand-in with the same three calls."""

    def __init__(self, index: int = 0, interval_s: float = 0.02, nvml=None):
        self.interval_s = interval_s
        self.samples_mw: list[float] = []
        self.why = ""
        self._nvml = nvml
        if self._nvml is None:
            try:
                import pynvml as nvml_mod

                nvml_mod.nvmlInit()
                self._nvml = nvml_mod
            except Exception as exc:  # noqa: BLE001 - missing package, driver or GPU: all mean "no NVML power"
                self.why = f"NVML not available ({exc.__class__.__name__}: {exc})"
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index) if self._nvml is not None else None
        self._stop = threading.Event()
        self._thread = None
        self._t0 = self._t1 = 0.0

    def _energy_mj(self) -> float | None:
        """The board's energy counter (mJ since the driver loaded; Volta and newer), None where absent."""
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:  # noqa: BLE001 - older GPUs and stand-ins without the counter
            return None

    def __enter__(self) -> "NvmlPowerSampler":
        if self._handle is None:
            return self
        self._e0 = self._energy_mj()

        def loop():
            while not self._stop.is_set():
                self.samples_mw.append(float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)))
                self._stop.wait(self.interval_s)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._t1 = time.perf_counter()
        self._e1 = self._energy_mj() if self._handle is not None else None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def summary(self, frames: int | None = None) -> dict:
        """Sampled power (``nvmlDeviceGetPowerUsage``: on recent GPUs a moving average over up to a second, so it
        lags short loops) and, where the GPU has it, the energy counter's exact joules over the loop, which then
        give ``average_w`` and ``mj_per_frame``."""
        if self._handle is None:
            return {"samples": 0, "why": self.why}
        seconds = self._t1 - self._t0
        res = {**_summarise_power(self.samples_mw, frames, seconds), "source": "nvml"}
        e0, e1 = getattr(self, "_e0", None), getattr(self, "_e1", None)
        if e0 is not None and e1 is not None and e1 > e0 and seconds > 0:
            energy = e1 - e0
            res.update({"source": "nvml energy counter", "energy_mj": round(energy, 1),
                        "sampled_average_w": res.get("average_w"), "average_w": round(energy / seconds / 1e3, 3)})
            if frames:
                res["mj_per_frame"] = round(energy / frames, 3)
        return res


def jetson_info(root: str = "/") -> dict | None:
    """Board model, power mode and clock state of a Jetson (None elsewhere), with warnings when the numbers
    it measures will not be stable or not the board's best."""
    model_file = Path(root) / "proc/device-tree/model"
    try:
        model = model_file.read_bytes().rstrip(b"\0").decode()
    except OSError:
        return None
    if "jetson" not in model.lower() and "nvidia" not in model.lower():
        return None
    info = {"board": model, "power_mode": None, "power_mode_id": None, "clocks_locked": None, "warnings": []}
    nvp = shutil.which("nvpmodel")
    if nvp:
        try:
            out = subprocess.run([nvp, "-q"], capture_output=True, text=True, timeout=5).stdout
            info.update(parse_nvpmodel(out))
        except (OSError, subprocess.SubprocessError):
            pass
    clocks = shutil.which("jetson_clocks")
    if clocks:
        try:
            out = subprocess.run([clocks, "--show"], capture_output=True, text=True, timeout=5).stdout
            info["clocks_locked"] = clocks_locked(out)
        except (OSError, subprocess.SubprocessError):
            pass
    if info["clocks_locked"] is False:
        info["warnings"].append("clocks are not locked (DVFS): timings vary with load; run `sudo jetson_clocks`")
    if info["power_mode"] and "MAXN" not in info["power_mode"].upper():
        info["warnings"].append(f"power mode {info['power_mode']} is not the maximum (MAXN): `sudo nvpmodel -m 0`")
    return info


def parse_nvpmodel(text: str) -> dict:
    """``nvpmodel -q`` -> power mode name and id (``NV Power Mode: MAXN`` then the id on the next line)."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if not m:
        m2 = re.search(r"NV Power Mode:\s*(\S+)", text)
        return {"power_mode": m2.group(1) if m2 else None, "power_mode_id": None}
    return {"power_mode": m.group(1), "power_mode_id": int(m.group(2))}


def clocks_locked(show: str) -> bool | None:
    """From ``jetson_clocks --show``: locked when every online CPU and the GPU run at their maximum
    (``MinFreq == MaxFreq == CurrentFreq``); None if the output names no clocks."""
    rows = re.findall(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", show)
    if not rows:
        return None
    return all(lo == hi == cur for lo, hi, cur in rows)


def gpu_info(index: int = 0, nvml=None) -> dict | None:
    """Name, compute capability, driver and memory of an NVIDIA GPU through NVML (None without one)."""
    if nvml is None:
        try:
            import pynvml as nvml

            nvml.nvmlInit()
        except Exception:  # noqa: BLE001
            return None
    try:
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(h)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
        return {"name": name.decode() if isinstance(name, bytes) else name, "compute_capability": f"SM{major}{minor}",
                "driver": (lambda d: d.decode() if isinstance(d, bytes) else d)(nvml.nvmlSystemGetDriverVersion()),
                "memory_gb": round(nvml.nvmlDeviceGetMemoryInfo(h).total / 2 ** 30, 1)}
    except Exception:  # noqa: BLE001
        return None


def device_info() -> dict:
    """CPU (model, ISA), GPU (NVML) and Jetson board of this machine: what every result records."""
    from .latency import machine_info

    info = machine_info()
    info["gpu"] = gpu_info()
    info["jetson"] = jetson_info()
    return info


def device_label(machine: dict) -> str:
    """A short name for a device in a merged report: the Jetson board, else the GPU, else the CPU and its
    widest vector ISA."""
    if machine.get("jetson"):
        j = machine["jetson"]
        return f"{j['board']}" + (f" ({j['power_mode']})" if j.get("power_mode") else "")
    if machine.get("gpu"):
        return f"{machine['gpu']['name']} ({machine['gpu'].get('compute_capability', '')})"
    isa = machine.get("isa") or []
    widest = next((f for f in ("amx_int8", "avx512_vnni", "avx512f", "avx2", "asimddp", "asimd") if f in isa), "")
    return f"{machine.get('cpu') or 'CPU'} x{machine.get('logical_cores', '?')}" + (f" {widest}" if widest else "")
