"""`edgesr profile`: ONNX Runtime's per-node profiler summed by operator and node, and convolution MACs
counted from the ONNX graph itself."""

from __future__ import annotations

import json

import pytest

from edgesr.benchmarks.profile_ops import onnx_macs, profile_onnx
from edgesr.cli import main


def test_convolution_macs_from_the_graph(tiny_student, tiny_student_d2s):
    # ABPN 4 ch, 1 body conv, x2: head 3->4, body 4->4, tail 4->12, all 3x3, at every LR pixel
    assert onnx_macs(tiny_student_d2s.payload, (36, 52)) == 36 * 52 * 9 * (3 * 4 + 4 * 4 + 4 * 12)
    # padded for the CPU kernels: tail 4->16, anchor 1x1 3->16, shuffle ConvTranspose 16->3 (2x2, stride 2)
    assert onnx_macs(tiny_student.payload, (36, 52)) == 36 * 52 * (9 * (3 * 4 + 4 * 4 + 4 * 16) + 3 * 16 + 16 * 3 * 4)


def test_profile_sums_the_timed_runs_by_operator_and_node(tiny_student, tiny_student_d2s):
    res = profile_onnx(tiny_student, input_hw=(48, 64), runs=4, threads=1, macs=1_000_000)
    ops = {o["op"]: o for o in res["ops"]}
    assert {"Conv", "ConvTranspose"} <= set(ops)  # the convolutions and the PixelShuffle (as the backend runs it)
    plain = profile_onnx(tiny_student_d2s, input_hw=(48, 64), runs=2, threads=1, fast_shuffle=False)
    assert "DepthToSpace" in {o["op"] for o in plain["ops"]} and "ConvTranspose" not in {o["op"] for o in plain["ops"]}
    assert sum(o["share"] for o in res["ops"]) == pytest.approx(1.0)
    assert sum(n["ms_per_run"] for n in res["nodes"]) == pytest.approx(res["kernel_ms_per_run"])
    # only the timed runs are counted (the profiler also recorded the 3 warm-up runs): each node ran 4 times
    assert {n["calls"] for n in res["nodes"]} == {4}
    assert res["gops"] == pytest.approx(2 * 1_000_000 / (res["median_ms"] / 1000) / 1e9)


def test_profile_command_writes_json_and_refuses_a_model(tiny_student, tmp_path, capsys):
    assert main(["profile", str(tiny_student.path), "--input", "32x48", "--runs", "2", "--threads", "1",
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "profile.json").read_text())
    assert res["input_hw"] == [32, 48] and res["machine"]["isa"] is not None
    assert "time by operator" in capsys.readouterr().out
    assert main(["profile", "msrep-s-x2", "--runs", "1"]) == 2
    assert "the profiler runs ONNX graphs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", str(tiny_student.path), "--input", "360by640"])
