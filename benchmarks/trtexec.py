"""trtexec into edgesr results: run NVIDIA's ``trtexec`` where it exists (Jetson: /usr/src/tensorrt/bin), or
import the timing JSON it exported elsewhere (``--exportTimes``, ``--exportProfile``), and turn it into the
statistics edgesr reports for every harness: host latency, enqueue time, H2D, GPU compute and D2H, each
min / median / p90 / p95 / p99 / max / mean, plus throughput (inferences over the host wall time, as
trtexec computes it) and the slowest layers. A Jetson with only trtexec joins the same report.

Export formats read: TensorRT 8.4+ (``startEnqMs endEnqMs startH2dMs endH2dMs startComputeMs endComputeMs
startD2hMs endD2hMs h2dMs computeMs d2hMs latencyMs``) and the older one (``startInMs ... inMs computeMs
outMs latencyMs endToEndMs``); the profile is a list whose first entry is ``{"count": N}`` followed by one
``{name, timeMs, averageMs, medianMs, percentage}`` per layer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgesr.errors import EdgesrError

from .latency import latency_stats

__all__ = ["TrtexecError", "parse_times", "parse_profile", "find_trtexec", "run_trtexec"]

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


class TrtexecError(EdgesrError, RuntimeError):
    """trtexec missing, failed, or wrote something that is not its timing export; the message says what to do."""


def _load(path: Path) -> list:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TrtexecError(f"{path}: not a trtexec JSON export ({exc}); pass the files written by "
                           "trtexec --exportTimes=FILE / --exportProfile=FILE") from exc
    if not isinstance(data, list):
        raise TrtexecError(f"{path}: not a trtexec JSON export (expected a list of records)")
    return data


def parse_times(path: str | Path) -> dict:
    """A ``--exportTimes`` file -> {inferences, latency, enqueue, h2d, compute, d2h (stats in ms),
    throughput_qps, host_walltime_s, data_transfers}."""
    records = [r for r in _load(path) if isinstance(r, dict) and "computeMs" in r]
    if not records:
        raise TrtexecError(f"{path}: no inference records (entries with computeMs); is it the --exportTimes file?")
    new = "startEnqMs" in records[0]
    h2d_key, d2h_key = ("h2dMs", "d2hMs") if new else ("inMs", "outMs")
    start_key = "startEnqMs" if new else "startInMs"
    end_keys = ("endD2hMs", "endComputeMs") if new else ("endOutMs", "endComputeMs")
    h2d = [float(r.get(h2d_key, 0.0)) for r in records]
    d2h = [float(r.get(d2h_key, 0.0)) for r in records]
    compute = [float(r["computeMs"]) for r in records]
    latency = [float(r["latencyMs"]) if "latencyMs" in r else h + c + d for r, h, c, d in zip(records, h2d, compute, d2h)]
    out = {"inferences": len(records), "format": "trtexec>=8.4" if new else "trtexec<8.4",
           "latency": latency_stats(latency), "compute": latency_stats(compute), "h2d": latency_stats(h2d),
           "d2h": latency_stats(d2h), "data_transfers": any(h2d) or any(d2h)}
    if new:
        out["enqueue"] = latency_stats([float(r["endEnqMs"]) - float(r["startEnqMs"]) for r in records])
    first = min(float(r[start_key]) for r in records)
    last = max(max(float(r.get(k, 0.0)) for k in end_keys) for r in records)
    wall = (last - first) / 1e3
    out["host_walltime_s"] = round(wall, 4)
    out["throughput_qps"] = round(len(records) / wall, 2) if wall > 0 else None
    return out


def parse_profile(path: str | Path, top: int = 10) -> dict:
    """A ``--exportProfile`` file -> {runs, layers (count), total_ms_per_run, top: slowest layers by average}."""
    data = _load(path)
    count = next((int(r["count"]) for r in data if isinstance(r, dict) and "count" in r), None)
    layers = [r for r in data if isinstance(r, dict) and "name" in r and "averageMs" in r]
    if not layers:
        raise TrtexecError(f"{path}: no layer records (name, averageMs); is it the --exportProfile file?")
    total = sum(float(r["averageMs"]) for r in layers)
    ranked = sorted(layers, key=lambda r: float(r["averageMs"]), reverse=True)[:top]
    return {"runs": count, "layers": len(layers), "total_ms_per_run": round(total, 4),
            "top": [{"name": r["name"], "average_ms": float(r["averageMs"]), "median_ms": float(r.get("medianMs", 0)),
                     "percent": float(r.get("percentage", 0))} for r in ranked]}


def find_trtexec(explicit: str | None = None) -> str:
    for cand in (explicit, shutil.which("trtexec"), JETPACK_TRTEXEC):
        if cand and Path(cand).is_file():
            return str(cand)
    raise TrtexecError("trtexec not found (not on PATH, not at /usr/src/tensorrt/bin/trtexec). Pass --trtexec PATH, "
                       "or run trtexec on the device with --exportTimes=t.json --exportProfile=p.json and import "
                       "them: edgesr bench-trtexec --times t.json --profile p.json")


def run_trtexec(model: str | Path, *, shapes: str, trtexec: str | None = None, cuda_graph: bool = False,
                no_data_transfers: bool = False, iterations: int = 200, warmup_ms: int = 500,
                extra: list[str] | None = None) -> dict:
    """Run trtexec on an engine (``.engine``/``.plan``: --loadEngine) or an ONNX file (--onnx) and parse its
    exports; the command and its settings are recorded with the numbers."""
    exe = find_trtexec(trtexec)
    model = Path(model)
    with tempfile.TemporaryDirectory() as tmp:
        times, profile = Path(tmp) / "times.json", Path(tmp) / "profile.json"
        cmd = [exe, f"--{'onnx' if model.suffix == '.onnx' else 'loadEngine'}={model}", f"--shapes={shapes}",
               f"--iterations={iterations}", f"--warmUp={warmup_ms}", f"--exportTimes={times}",
               f"--exportProfile={profile}", "--separateProfileRun"]
        cmd += (["--useCudaGraph"] if cuda_graph else []) + (["--noDataTransfers"] if no_data_transfers else [])
        cmd += list(extra or [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise TrtexecError(f"trtexec failed (exit {proc.returncode}) on {model}:\n{tail}")
        res = parse_times(times)
        res["profile"] = parse_profile(profile) if profile.is_file() else None
    res["command"] = " ".join(cmd)
    res["settings"] = {"cuda_graph": cuda_graph, "data_transfers": not no_data_transfers, "iterations": iterations,
                       "warmup_ms": warmup_ms, "shapes": shapes}
    return res
