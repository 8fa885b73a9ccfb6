"""Devices, power and trtexec, as far as a CPU-only machine allows: parsers on outputs in the tools' formats
(tegrastats per Jetson generation, nvpmodel, jetson_clocks, trtexec's JSON exports), the samplers against
stand-ins for tegrastats and NVML, trtexec run through a stand-in executable, and the merged report."""

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from edgesr.benchmarks.devices import (NvmlPowerSampler, TegrastatsSampler, clocks_locked, device_label, jetson_info,
                                       parse_nvpmodel, parse_tegrastats)
from edgesr.benchmarks.trtexec import TrtexecError, find_trtexec, parse_profile, parse_times, run_trtexec
from edgesr.cli import main

DATA = Path(__file__).parent / "data"
LINES = [ln for ln in (DATA / "tegrastats.txt").read_text().splitlines() if ln and not ln.startswith("#")]


def test_tegrastats_lines_of_each_jetson_generation():
    orin, nx, nano, idle = (parse_tegrastats(ln) for ln in LINES)
    assert orin["input_mw"] == 9832 and orin["rails_mw"]["VDD_CPU_GPU_CV"] == (3307, 2927)
    assert (orin["gpu_load_pct"], orin["gpu_mhz"], orin["ram_mb"], orin["ram_total_mb"]) == (97, 624, 3595, 7607)
    assert orin["temps_c"]["tj"] == 53.0 and orin["emc_load_pct"] == 62
    assert nx["input_mw"] == 7456 and nx["rails_mw"]["VDD_SOC"] == (1347, 1326) and nx["gpu_mhz"] == 1109
    assert nano["input_mw"] == 6124 and nano["rails_mw"]["POM_5V_GPU"] == (2816, 2410) and nano["gpu_load_pct"] == 99
    assert idle["gpu_load_pct"] == 0 and idle["input_mw"] == 5232
    assert parse_tegrastats("garbage")["input_mw"] is None


def _wait_for(condition, timeout: float = 30.0) -> None:
    """Let a sampler run until it has what the test needs (no timing assumption about a busy machine)."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)


def _script(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(f"#!{sys.executable}\n{body}")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_tegrastats_sampler_averages_the_input_rail(tmp_path):
    lines = [LINES[0], LINES[3]]  # busy 9832 mW, idle 5232 mW, alternating
    fake = _script(tmp_path, "tegrastats", "import sys, time\nlines = %r\ni = 0\nwhile True:\n"
                   "    print(lines[i %% 2], flush=True); i += 1; time.sleep(0.01)\n" % lines)
    with TegrastatsSampler(command=[str(fake)]) as s:
        _wait_for(lambda: len(s.lines) >= 12)
    res = s.summary(frames=100)
    assert res["samples"] >= 10 and res["source"] == "tegrastats"
    assert 5.2 <= res["average_w"] <= 9.9 and res["max_w"] == 9.832
    assert res["mj_per_frame"] == pytest.approx(res["average_w"] * res["seconds"] / 100 * 1e3, rel=1e-2)  # from rounded figures
    assert res["rails"] == ["VDD_CPU_GPU_CV", "VDD_IN", "VDD_SOC"] and res["ram_mb_peak"] == 3595
    assert TegrastatsSampler(command=None).summary()["samples"] == 0 or shutil.which("tegrastats")


def test_nvml_power_sampler_with_a_stand_in():
    class FakeNvml:
        calls = 0

        @staticmethod
        def nvmlDeviceGetHandleByIndex(i):
            return i

        @classmethod
        def nvmlDeviceGetPowerUsage(cls, h):
            cls.calls += 1
            return 50_000 if cls.calls % 2 else 70_000  # milliwatts

    with NvmlPowerSampler(nvml=FakeNvml, interval_s=0.005) as s:
        _wait_for(lambda: len(s.samples_mw) >= 12)
    res = s.summary(frames=40)
    assert res["samples"] >= 10 and 50 <= res["average_w"] <= 70 and res["max_w"] == 70
    assert res["mj_per_frame"] == pytest.approx(res["average_w"] * res["seconds"] / 40 * 1e3, rel=1e-2)  # from rounded figures


def test_nvml_energy_counter_gives_exact_joules_over_the_loop():
    """Sampled power lags (recent GPUs report a moving average); the energy counter's difference over the loop is
    exact, so where a GPU has it, it decides average W and mJ/frame."""
    class FakeNvml:
        energy = 1_000_000.0  # mJ since the driver loaded

        @staticmethod
        def nvmlDeviceGetHandleByIndex(i):
            return i

        @staticmethod
        def nvmlDeviceGetPowerUsage(h):
            return 90_000  # a stale 90 W reading

        @classmethod
        def nvmlDeviceGetTotalEnergyConsumption(cls, h):
            return cls.energy

    with NvmlPowerSampler(nvml=FakeNvml, interval_s=0.005) as s:
        _wait_for(lambda: len(s.samples_mw) >= 30)  # >= 0.15 s: the report's 1 ms rounding of seconds is < 1 %
        FakeNvml.energy += 6_000.0  # 6 J during the loop
    res = s.summary(frames=30)
    assert res["source"] == "nvml energy counter" and res["energy_mj"] == 6000.0 and res["mj_per_frame"] == 200.0
    assert res["sampled_average_w"] == 90.0 and res["average_w"] == pytest.approx(6.0 / res["seconds"], rel=1e-2)


def test_jetson_board_power_mode_and_clock_warnings(tmp_path, monkeypatch):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir, "nvpmodel", "print('NV Power Mode: 15W\\n0')\n")
    _script(bindir, "jetson_clocks", "print('SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit\\n"
            "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=729600 IdleStates: WFI=1\\n"
            "GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000')\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    info = jetson_info(str(tmp_path))
    assert info["board"] == "NVIDIA Jetson Orin Nano Developer Kit" and info["power_mode"] == "15W"
    assert info["clocks_locked"] is False and len(info["warnings"]) == 2
    assert "sudo jetson_clocks" in info["warnings"][0] and "MAXN" in info["warnings"][1]
    assert device_label({"jetson": info}) == "NVIDIA Jetson Orin Nano Developer Kit (15W)"
    assert jetson_info(str(tmp_path / "nowhere")) is None  # not a Jetson
    assert parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"power_mode": "MAXN", "power_mode_id": 0}
    assert clocks_locked("cpu0: MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400\n"
                         "GPU MinFreq=624750000 MaxFreq=624750000 CurrentFreq=624750000") is True
    assert clocks_locked("nothing") is None


def test_trtexec_exports_become_the_harness_statistics():
    t = parse_times(DATA / "trtexec/times.json")
    raw = json.loads((DATA / "trtexec/times.json").read_text())
    assert t["inferences"] == 200 and t["format"] == "trtexec>=8.4" and t["data_transfers"]
    compute = sorted(r["computeMs"] for r in raw)
    assert t["compute"]["min_ms"] == pytest.approx(compute[0], abs=1e-3)
    assert t["compute"]["max_ms"] == pytest.approx(compute[-1], abs=1e-3)
    assert t["compute"]["p50_ms"] == pytest.approx((compute[99] + compute[100]) / 2, abs=1e-3)
    assert t["latency"]["p50_ms"] > t["compute"]["p50_ms"] + t["h2d"]["p50_ms"]  # latency = H2D + compute + D2H
    wall = (raw[-1]["endD2hMs"] - raw[0]["startEnqMs"]) / 1e3
    assert t["throughput_qps"] == pytest.approx(200 / wall, rel=1e-3)
    old = parse_times(DATA / "trtexec/times_trt7.json")
    assert old["format"] == "trtexec<8.4" and old["inferences"] == 50 and "enqueue" not in old
    assert old["compute"]["p50_ms"] == pytest.approx(latency_median([r["computeMs"] for r in raw[:50]]), abs=1e-3)
    prof = parse_profile(DATA / "trtexec/profile.json", top=2)
    assert prof["runs"] == 641 and prof["layers"] == 5
    assert [x["name"] for x in prof["top"]] == ["/body.1/Conv + /body.2/Relu", "/Add + /pixel_shuffle/DepthToSpace"]
    with pytest.raises(TrtexecError, match="is it the --exportTimes file"):
        parse_times(DATA / "trtexec/profile.json")


def latency_median(values):
    v = sorted(values)
    return (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def test_trtexec_run_through_a_stand_in_and_imported_into_one_report(tmp_path, monkeypatch, capsys):
    fake = _script(tmp_path, "trtexec", "import sys, shutil\nargs = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)\n"
                   f"shutil.copy({str(DATA / 'trtexec/times.json')!r}, args['exportTimes'])\n"
                   f"shutil.copy({str(DATA / 'trtexec/profile.json')!r}, args['exportProfile'])\n"
                   "print('&&&& PASSED TensorRT.trtexec')\n")
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"not really an engine")
    res = run_trtexec(engine, shapes="lr:1x3x360x640", trtexec=str(fake), cuda_graph=True)
    assert "--loadEngine=" in res["command"] and "--useCudaGraph" in res["command"] and "--shapes=lr:1x3x360x640" in res["command"]
    assert res["inferences"] == 200 and res["profile"]["runs"] == 641 and res["settings"]["cuda_graph"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TrtexecError, match="trtexec not found.*--times t.json"):
        find_trtexec()
    # Import the exports of a run on a Jetson, then merge with a CPU run recorded in benchmarks/results.
    assert main(["bench-trtexec", "--times", str(DATA / "trtexec/times.json"), "--profile", str(DATA / "trtexec/profile.json"),
                 "--device", "Jetson Orin Nano (MAXN)", "--variant", "student_fp16", "--precision", "fp16",
                 "--out", str(tmp_path / "jetson")]) == 0
    assert "student_fp16 on Jetson Orin Nano (MAXN): host latency median" in capsys.readouterr().out
    cpu_run = Path(__file__).parents[1] / "benchmarks/results/quickstart_x2"
    assert main(["report", str(cpu_run), str(tmp_path / "jetson"), "--out", str(tmp_path / "merged")]) == 0
    report = (tmp_path / "merged/report.md").read_text()
    assert "## Jetson Orin Nano (MAXN)" in report and "## AMD EPYC x2 avx512_vnni" in report
    assert "| student_fp16 | fp16 | tensorrt (trtexec) | – |" in report
    merged = json.loads((tmp_path / "merged/results.json").read_text())
    assert {r["device"] for r in merged["variants"]} == {"Jetson Orin Nano (MAXN)", "AMD EPYC x2 avx512_vnni"}
    assert (tmp_path / "merged/pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2")]) == 2


def test_report_merges_a_cpu_run_and_the_recorded_h100_run_plotting_one_input_size(tmp_path):
    from edgesr.cli import main

    root = Path(__file__).parents[1] / "benchmarks/results"
    assert main(["report", str(root / "msrep_s_finetune_x2"), str(root / "gpu_h100/students"), "--out", str(tmp_path / "m"),
                 "--set", "Set5"]) == 0
    report = (tmp_path / "m/report.md").read_text()
    assert "## NVIDIA H100 80GB HBM3 (SM90)" in report and "## AMD EPYC x2 avx512_vnni" in report
    assert "| msrep-s-x2 fp16-cl-graph | fp16 | torch-cuda | 1080x1920 b1 | 36.78 |" in report
    assert "| msrep_s_int8 | int8 | onnxruntime | 360x640 b1 | 36.70 |" in report
    merged = json.loads((tmp_path / "m/results.json").read_text())
    assert merged["plot_input"] == [360, 640]  # most rows of both runs were timed at 360x640
    assert "against median latency at LR 360x640, batch 1" in report

