"""One report across devices: ``edgesr report RUN_DIR... --out DIR`` merges the ``results.json`` of runs made
on several machines (a desktop GPU, a Jetson, x86 CPUs, trtexec imports) into one table per device and one
Pareto plot (PSNR against median latency) with a marker per device, so users pick an engine for their
latency budget on the hardware they have. Each run keeps its own device record (CPU model and ISA, GPU
name and compute capability, Jetson board and power mode)."""

from __future__ import annotations

import json
from pathlib import Path

from edgesr.errors import UsageError
from edgesr.files import atomic_write_text

from .devices import device_label
from .report import pareto_front, save_figure

__all__ = ["merge_runs"]

MARKERS = "osD^v<>P*X"


def _rows_of(run: Path) -> tuple[dict, list[dict]]:
    f = run / "results.json" if run.is_dir() else run
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{f}: not an edgesr results.json ({exc}); give run directories written by edgesr run "
                         "or edgesr bench-trtexec") from exc
    if not isinstance(data, dict) or "variants" not in data:
        raise UsageError(f"{f}: has no 'variants'; give run directories written by edgesr run or edgesr bench-trtexec")
    return data, data["variants"]


def _lr_input(row: dict) -> tuple[int, int, int] | None:
    """(batch, H, W) of a row's LR input: GPU rows carry ``input``, CPU rows ``latency.input``; trtexec imports
    do not say."""
    shape = row.get("input") or (row.get("latency") or {}).get("input")
    return (int(shape[0]), int(shape[2]), int(shape[3])) if shape and len(shape) == 4 else None


def merge_runs(runs: list[str | Path], out: str | Path, set_name: str | None = None,
               input_hw: tuple[int, int] | None = None) -> dict:
    """Write ``out/report.md``, ``out/results.json`` and ``out/pareto.png`` for the runs; returns the merged
    results. ``set_name``: the evaluation set on the plot (default: the first one any run measured).
    ``input_hw``: the LR size the plot compares at, batch 1 (default: the size most rows were timed at), since
    latencies at different sizes do not belong on one axis; the tables list every row with its size."""
    out = Path(out)
    merged, devices = [], {}
    for run in runs:
        data, rows = _rows_of(Path(run))
        label = data.get("device_label") or device_label(data.get("machine") or {})
        devices.setdefault(label, {"machine": data.get("machine"), "runs": []})["runs"].append(
            {"path": str(run), "command": data.get("command"), "measured_at": data.get("measured_at")})
        for r in rows:
            merged.append({**{k: v for k, v in r.items() if k != "times_ms"}, "device": label, "run": str(run)})
    sets = [s for r in merged for s in (r.get("quality") or {})]
    set_name = set_name or (sets[0] if sets else None)
    sizes = [(i[1], i[2]) for r in merged if (i := _lr_input(r)) and i[0] == 1]
    if input_hw is None and sizes:
        input_hw = max(set(sizes), key=sizes.count)
    result = {"devices": devices, "eval_set": set_name, "plot_input": list(input_hw) if input_hw else None,
              "variants": merged}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    lines = ["# edgesr report across devices", "", f"Runs: {', '.join(f'`{r}`' for r in map(str, runs))}.", ""]
    for label, dev in devices.items():
        lines += [f"## {label}", ""]
        for run in dev["runs"]:
            lines.append(f"- `{run['command'] or run['path']}` ({run['measured_at'] or 'time not recorded'})")
        for w in ((dev["machine"] or {}).get("jetson") or {}).get("warnings", []):
            lines.append(f"- ⚠ {w}")
        lines += ["", f"| variant | precision | backend | LR input | {set_name or 'quality'} PSNR | median ms | p90 ms | "
                  "p99 ms | throughput | power |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in merged if r["device"] == label):
            q = (r.get("quality") or {}).get(set_name) if set_name else None
            lat = r.get("latency") or {}
            power = r.get("power") or {}
            thr = r.get("throughput_qps") or lat.get("fps")
            psnr = f"{q['psnr']:.2f}" if q else "–"
            lr = _lr_input(r)
            cells = [r["variant"], r.get("precision", "–"), r.get("backend", "–"),
                     f"{lr[1]}x{lr[2]} b{lr[0]}" if lr else "–", psnr,
                     *(f"{lat[k]:.2f}" if lat.get(k) is not None else "–" for k in ("p50_ms", "p90_ms", "p99_ms")),
                     f"{thr:.1f}/s" if thr else "–", f"{power['average_w']:.1f} W" if power.get("average_w") else "–"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    plotted = [r for r in merged if set_name and set_name in (r.get("quality") or {}) and r.get("latency")
               and (input_hw is None or _lr_input(r) in (None, (1, *input_hw)))]
    if plotted:
        _plot(plotted, set_name, out / "pareto.png")
        at = f" at LR {input_hw[0]}x{input_hw[1]}, batch 1" if input_hw else ""
        lines += [f"![PSNR on {set_name} against median latency{at}, a marker per device](pareto.png)", ""]
    else:
        lines += ["No row has both a quality and a latency (trtexec imports carry latency only), so no plot.", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return result


def _plot(rows: list[dict], set_name: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    labels = list(dict.fromkeys(r["device"] for r in rows))
    for i, label in enumerate(labels):
        rs = [r for r in rows if r["device"] == label]
        pts = [(r["latency"]["p50_ms"], r["quality"][set_name]["psnr"]) for r in rs]
        ax.scatter(*zip(*pts), marker=MARKERS[i % len(MARKERS)], s=40, label=label, zorder=3)
        front = pareto_front(pts)
        for j in front:  # names on the device's Pareto front only: the rest are in the tables
            ax.annotate(f"{rs[j]['variant']} ({rs[j].get('backend', '')})", pts[j], textcoords="offset points",
                        xytext=(5, 3), fontsize=6)
        fx, fy = zip(*[pts[j] for j in front])
        ax.step(fx, fy, where="post", linestyle="--", linewidth=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("latency, median (ms, log scale)")
    ax.set_ylabel(f"PSNR-Y on {set_name} (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)
