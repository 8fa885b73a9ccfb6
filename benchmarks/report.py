"""Report: one results table (quality x latency per variant) as markdown, JSON and a Pareto plot.

Measured numbers are never dropped silently. Before a run directory's report is rewritten, the previous
``results.json``, ``report.md`` and ``pareto.png`` are moved to ``history/<time>/``; and the quality a
previous run measured on an evaluation set that this run did not evaluate is carried into the new results
for every variant whose artifact is byte-identical (same content hash, same backend), marked with the time
it was measured. So ``edgesr run --eval Set5`` after a run on the built-in set reports both sets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgesr.files import atomic_write_text

__all__ = ["write_report", "pareto_front", "merge_previous"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower latency and higher PSNR is better), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _fmt(x, nd=2, dash="–"):
    return dash if x is None else f"{x:.{nd}f}"


def _backend_label(r: dict) -> str:
    """The backend, with the inference precision it chose where that is not the artifact's own (OpenVINO
    runs FP32 graphs in BF16 on CPUs that have it)."""
    chosen = (r.get("backend_info") or {}).get("inference_precision")
    return f"{r['backend']} ({chosen})" if chosen and chosen != "f32" else r["backend"]


def _fastest_table(rows: list[dict], set_names: list[str]) -> list[str]:
    """Per variant: the fastest backend, its median latency and its quality there."""
    lines = ["## Fastest backend per variant", "", "| variant | fastest backend | median ms | speed-up over the slowest | "
             + " | ".join(f"{s_} PSNR there" for s_ in set_names) + " |", "|" + "---|" * (4 + len(set_names))]
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    for variant, rs in by_variant.items():
        best = min(rs, key=lambda r: r["latency"]["p50_ms"])
        worst = max(rs, key=lambda r: r["latency"]["p50_ms"])
        lines.append(f"| {variant} | {_backend_label(best)} | {_fmt(best['latency']['p50_ms'], 1)} | "
                     f"{worst['latency']['p50_ms'] / best['latency']['p50_ms']:.2f}x | "
                     + " | ".join(_fmt(best["quality"][s_]["psnr"]) if s_ in best["quality"] else "–" for s_ in set_names)
                     + " |")
    return lines + [""]


def save_figure(fig, path: Path) -> None:
    """Lay out and save a Matplotlib figure; characters its font cannot draw (a stage named in Chinese, say) make one note
    naming them instead of one warning per glyph per draw (hundreds), and are drawn as boxes in the picture
    (report.md keeps the names)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.tight_layout()
        fig.savefig(path)
    missing, other = [], []
    for w in caught:
        text = str(w.message)
        if "missing from font" in text:  # "Glyph 23398 (\\N{CJK UNIFIED IDEOGRAPH-5B66}) missing from font(s) ..."
            code = text.split()[1] if text.startswith("Glyph ") else ""
            missing.append(chr(int(code)) if code.isdigit() else "?")
        else:
            other.append(w)
    for w in other:  # anything else is still shown
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        from edgesr.progress import console

        chars = "".join(dict.fromkeys(missing))
        console.print(f"note: {path.name}: the plot's font cannot draw {len(chars)} character(s) ({chars[:20]}"
                      f"{' ...' if len(chars) > 20 else ''}), used in its labels; they show as boxes there, report.md "
                      "has the names", highlight=False, markup=False)


def _plot(rows: list[dict], set_name: str, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["latency"]["p50_ms"], r["quality"][set_name]["psnr"]) for r in rows]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    markers = {}
    for r, (x, y) in zip(rows, pts):
        m = markers.setdefault(r["backend"], "osD^v<>"[len(markers) % 7])
        ax.scatter(x, y, s=40, zorder=3, marker=m, color="tab:red" if r["precision"].startswith("int8") else "tab:blue")
        label = f"{r['variant']} ({r['precision']}" + (f", {r['backend']})" if len(set(q["backend"] for q in rows)) > 1 else ")")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    for b, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=b)
    fx, fy = zip(*[pts[i] for i in front])
    ax.step(fx, fy, where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("latency, median (ms, log scale)")
    ax.set_ylabel(f"PSNR-Y on {set_name} (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def _archive_previous(out: Path) -> tuple[dict | None, Path | None]:
    """Move the previous report files to ``out/history/<time>/``; return the previous results (or None)."""
    prev_path = out / "results.json"
    files = [out / n for n in ("results.json", "report.md", "pareto.png") if (out / n).is_file()]
    if not files:
        return None, None
    prev = None
    try:
        prev = json.loads(prev_path.read_text()) if prev_path.is_file() else None
    except (OSError, ValueError):
        prev = None  # unreadable: still archived below, just not merged
    stamp = (prev or {}).get("measured_at") or f"mtime-{int(files[0].stat().st_mtime)}"
    dest = out / "history" / stamp.replace(":", "")
    n = 1
    while dest.exists():
        dest = dest.with_name(f"{dest.name.split('~')[0]}~{n}")
        n += 1
    dest.mkdir(parents=True)
    for f in files:
        shutil.move(str(f), dest / f.name)
    return (prev if isinstance(prev, dict) else None), dest


def merge_previous(rows: list[dict], reference: dict, prev: dict | None) -> list[str]:
    """Carry into ``rows`` (in place) the previous run's quality on evaluation sets not measured now, for the
    variants whose artifact hash and backend are unchanged; returns the sets carried."""
    if not prev:
        return []
    carried: set[str] = set()
    old = {(r.get("variant"), r.get("hash"), r.get("backend")): r for r in prev.get("variants", [])}
    for r in rows:
        o = old.get((r["variant"], r["hash"], r["backend"]))
        if not o:
            continue
        for sname, q in (o.get("quality") or {}).items():
            if sname not in r["quality"]:
                r["quality"][sname] = {**q, "reused": True}
                carried.add(sname)
    for sname, v in (prev.get("protocol_reference_bicubic") or {}).items():
        if sname in carried and sname not in reference:
            reference[sname] = v
    return sorted(carried)


def write_report(out: Path, *, recipe_name: str, scale: int, rows: list[dict], stages: list[dict],
                 machine: dict, reference: dict, command: str, input_hw: tuple[int, int],
                 measured_at: str = "", timing: dict | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``results.json`` and ``pareto.png`` into ``out`` (the previous ones are moved to
    ``history/``, and their quality on sets not measured now is merged); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    current_sets = list(rows[0]["quality"]) if rows else []
    prev, archived = _archive_previous(out)
    carried = merge_previous(rows, reference, prev)
    set_names = current_sets + [c for c in carried if c not in current_sets]
    results = {"recipe": recipe_name, "scale": scale, "command": command, "measured_at": measured_at,
               "machine": machine, "latency_input_hw": list(input_hw), "timing": timing or {},
               "protocol_reference_bicubic": reference,
               "eval_sets_measured": current_sets, "eval_sets_reused": carried,
               "previous_results": str(archived.relative_to(out)) if archived else None,
               "stages": stages, "variants": rows}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    timing = timing or {}
    lines = _report_header(recipe_name, scale, command, machine, input_hw, timing)
    lines += _results_table(rows, set_names)
    if carried:
        lines += [f"† measured by an earlier run on the same artifacts (same content hash, same backend), not "
                  f"re-measured by this one: {', '.join(carried)}. The earlier report is in "
                  f"`{archived.relative_to(out)}/`.", ""]
    elif archived:
        lines += [f"The previous report of this directory is in `{archived.relative_to(out)}/`.", ""]
    lines += _comparisons(rows, set_names, timing.get("max_ratio_ci", 0.10))
    lines += _gain_over_bicubic(rows, set_names)
    lines += _report_footer(machine, reference, stages)
    lines += ["", "![PSNR vs latency](pareto.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    if rows and current_sets:
        h, w = input_hw
        _plot(rows, current_sets[0], out / "pareto.png", f"{recipe_name} x{scale}: PSNR vs latency ({w}x{h} input)")
    return {"report": out / "report.md", "results": out / "results.json", "plot": out / "pareto.png",
            "archived": archived}


def _report_header(recipe_name: str, scale: int, command: str, machine: dict, input_hw: tuple[int, int],
                   timing: dict) -> list[str]:
    """Title, command, machine, the measuring protocol and the backends' settings."""
    h, w = input_hw
    isa = ", ".join(machine.get("isa") or []) or "unknown"
    versions = ", ".join(f"{n} {machine[k]}" for k, n in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO"),
                                                          ("torch", "PyTorch")) if machine.get(k))
    lines = [f"# edgesr report — {recipe_name} (x{scale})", "",
             f"Command: `{command}`", "",
             f"Machine: {machine.get('cpu')} ({machine.get('logical_cores')} logical cores; ISA: {isa}), "
             f"{machine.get('platform')}; {versions}.",
             "",
             "Quality: PSNR-Y / SSIM-Y (BT.601 Y, border = scale cropped, SR rounded to 8 bits), LR by MATLAB bicubic, "
             "measured on the (artifact, backend) pair that is timed. "
             f"Latency: one {w}x{h} LR input (N=1)"
             + (f", every pair timed in one interleaved run ({timing['rounds']} rounds, each pair once per round in a "
                f"shuffled order, after {timing.get('warmup')} warm-up runs each)" if timing.get("rounds") else "")
             + "; min / p10 / median / p90 of the rounds, spread = (p90 - p10) / median; throughput in output "
             "megapixels per second at the median. Speed-ups are ratios of medians from that run, with a 95 % "
             "bootstrap interval over rounds."
             + (" The latency columns time the bare graph (a float32 N x 3 x H x W tensor in and out); *frame in/out* "
                "times what a user runs, `Upscaler.upscale` of an 8-bit H x W x 3 frame to the 8-bit SR frame, in the "
                "same rounds, and *x bare* is its median over the bare graph's." if timing.get("frames") else ""), ""]
    opts = {b: o for b, o in (timing.get("backend_options") or {}).items() if o}
    if opts:
        lines += ["Backend settings for interleaved timing: " + "; ".join(
            f"{b} " + ", ".join(f"{k}={v}" for k, v in o.items()) for b, o in opts.items())
            + " (idle threads that spin-wait after a run would take the cores from the next pair of the round).", ""]
    if timing.get("backends_left_out"):
        lines += ["Backends left out (not available here): " + "; ".join(
            f"{k}: {v}" for k, v in timing["backends_left_out"].items()), ""]
    return lines


def _results_table(rows: list[dict], set_names: list[str]) -> list[str]:
    """One row per (variant, backend): quality per set, latency statistics, frame in/out."""
    lines = ["## Results", ""]
    head = ["variant", "precision", "backend", "threads", "params", "GMACs"]
    for s_ in set_names:
        head += [f"{s_} PSNR", f"{s_} SSIM"]
    head += ["median ms", "min ms", "p10 ms", "p90 ms", "spread", "fps", "MP/s", "GOP/s"]
    frames = any(r.get("frames_latency") for r in rows)
    if frames:
        head += ["frame in/out ms", "frame fps", "x bare"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], r["precision"], _backend_label(r), str(r["threads"]),
                 f"{r['params']:,}" if r.get("params") is not None else "–",
                 _fmt(r["macs"] / 1e9 if r.get("macs") else None)]
        for s_ in set_names:
            q = r["quality"].get(s_)
            mark = "†" if q and q.get("reused") else ""
            cells += [_fmt(q["psnr"]) + mark if q else "–", _fmt(q.get("ssim"), 4) + mark if q else "–"]
        lat = r["latency"]
        cells += [_fmt(lat["p50_ms"], 1), _fmt(lat.get("min_ms"), 1), _fmt(lat.get("p10_ms"), 1), _fmt(lat["p90_ms"], 1),
                  f"{100 * lat['spread']:.0f} %" if lat.get("spread") is not None else "–", _fmt(lat["fps"], 1),
                  _fmt(lat["output_mpix_per_s"], 1),
                  _fmt(2 * r["macs"] / (lat["p50_ms"] / 1e3) / 1e9 if r.get("macs") else None, 1)]
        if frames:
            fl = r.get("frames_latency")
            cells += [_fmt(fl["p50_ms"], 1) if fl else "–", _fmt(fl["fps"], 1) if fl else "–",
                      f"{r['frames_over_bare']['ratio']:.2f}x" if fl else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _comparisons(rows: list[dict], set_names: list[str], max_ci: float) -> list[str]:
    """Lossy steps against their parents, backends against the reference backend (speed-ups with their intervals,
    flagged when too wide to trust) and the fastest runtime per variant."""
    lines: list[str] = []
    untrusted = []

    def ratio_cell(sp) -> str:
        if sp is None:
            return "–"
        if not isinstance(sp, dict):  # results written before interleaving: a bare ratio
            return f"{sp:.2f}x"
        flag = ""
        if sp["ci_rel_width"] > max_ci:
            flag = " ⚠"
            untrusted.append(sp)
        return f"{sp['ratio']:.2f}x [{sp['ci95'][0]:.2f}–{sp['ci95'][1]:.2f}]{flag}"

    deltas = [r for r in rows if r.get("vs_parent")]
    if deltas:
        lines += ["## Lossy steps against their parents (same backend)", "",
                  "| variant | backend | parent | " + " | ".join(f"{s_} ΔPSNR (dB)" for s_ in set_names)
                  + " | speed-up (median) [95 % CI] |", "|" + "---|" * (4 + len(set_names))]
        for r in deltas:
            v = r["vs_parent"]
            lines.append(f"| {r['variant']} | {_backend_label(r)} | {v['parent']} | " +
                         " | ".join(_fmt(v["psnr_delta"].get(s_), 3) for s_ in set_names) + f" | {ratio_cell(v['speedup'])} |")
        lines.append("")
    across = [r for r in rows if r.get("vs_reference_backend")]
    if across:
        ref_backend = across[0]["vs_reference_backend"]["backend"]
        lines += [f"## Backends against {ref_backend} (same artifact)", "",
                  "| variant | backend | " + " | ".join(f"{s_} ΔPSNR (dB)" for s_ in set_names)
                  + f" | speed-up over {ref_backend} [95 % CI] |", "|" + "---|" * (3 + len(set_names))]
        for r in across:
            v = r["vs_reference_backend"]
            lines.append(f"| {r['variant']} | {_backend_label(r)} | " +
                         " | ".join(_fmt(v["psnr_delta"].get(s_), 3) for s_ in set_names) + f" | {ratio_cell(v['speedup'])} |")
        lines.append("")
        lines += _fastest_table(rows, set_names)
    if untrusted:
        lines += [f"⚠ {len(untrusted)} speed-up(s) above have a 95 % interval wider than {100 * max_ci:.0f} % of the "
                  "ratio: the machine was too noisy during this run for them to be trusted. Re-run with more "
                  "`benchmark.runs`, or on a quieter machine.", ""]
    return lines


def _gain_over_bicubic(rows: list[dict], set_names: list[str]) -> list[str]:
    lines: list[str] = []
    bics = {r["backend"]: r for r in rows if r["variant"] == "bicubic"}
    if bics:
        several = len({r["backend"] for r in rows}) > 1
        lines += ["## Gain over bicubic" + (" (on the same backend)" if several else ""), "",
                  "| variant | " + ("backend | " if several else "") + " | ".join(f"{s_} (dB)" for s_ in set_names) + " |",
                  "|" + "---|" * (1 + several + len(set_names))]
        for r in rows:
            bic = bics.get(r["backend"])
            if r["variant"] == "bicubic" or bic is None:
                continue
            lines.append(f"| {r['variant']} | " + (f"{_backend_label(r)} | " if several else "") + " | ".join(
                f"{r['quality'][s_]['psnr'] - bic['quality'][s_]['psnr']:+.2f}"
                if s_ in r["quality"] and s_ in bic["quality"] else "–" for s_ in set_names) + " |")
        lines.append("")
    return lines


def _report_footer(machine: dict, reference: dict, stages: list[dict]) -> list[str]:
    """The machine's yardstick, the protocol reference and the stage table."""
    lines: list[str] = []
    peak = machine.get("peak")
    if peak:
        lines += [f"Machine yardstick (ONNX Runtime, {peak['threads'] or 'all'} threads, {peak['n']}^3 products): FP32 "
                  f"MatMul {peak['fp32_matmul_gops']} GFLOP/s, INT8 MatMulInteger {peak['int8_matmul_gops']} GOP/s. "
                  "GOP/s above = 2 x MACs / p50: how much of that a network's convolutions reach.", ""]
    if reference:
        lines += ["Protocol reference — MATLAB bicubic (edgesr.data.bicubic) on the same LR images: " +
                  ", ".join(f"{s} {v:.2f} dB" for s, v in reference.items()) +
                  ". The `bicubic` row above is the ONNX Resize graph, which clamps at borders where MATLAB mirrors.", ""]
    lines += ["## Stages", "",
              "`ran`: built by this run; `reused`: its inputs were unchanged, so the verified artifact built "
              "earlier was used (its build time is shown apart; this run's time is the check).", "",
              "| stage | kind | status | this run (s) | built earlier in (s) | training steps | validation PSNR (dB) |",
              "|---|---|---|---|---|---|---|"]
    for s in stages:
        steps = s.get("train_steps")
        steps = f"{steps:,}" + (" (time budget)" if s.get("stopped_by_time") else "") if steps else ""
        lines.append(f"| {s['name']} | {s['stage']} | {s['status']} | {_fmt(s['seconds'], 1)} | "
                     f"{_fmt(s.get('built_seconds'), 1) if s.get('status') == 'reused' else ''} | {steps} | "
                     f"{_fmt(s.get('val_psnr'))} |")
    lines += ["", "Training steps: what each trained stage reached; \"(time budget)\": it stopped at its `max_minutes`, so "
              "its result depends on this host's speed (give `steps` without `max_minutes` for results meant to be "
              "reproduced)."]
    return lines
