"""The latency harness: device profiles, the CPU fallback, the result schema, `report`, the dilation sweep."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from mobileseg.bench.android import benchmark_flags, parse_benchmark_output
from mobileseg.bench.devices import DeviceError, device_names, load_device
from mobileseg.bench.latency import Protocol, measure
from mobileseg.bench.profile import ProfileRequest, profile
from mobileseg.bench.report import load_result, schema_errors, write_result
from mobileseg.cli import app
from mobileseg.export.pipeline import ExportRequest, export_model

runner = CliRunner()


@pytest.fixture(scope="module")
def sinet_folder(tmp_path_factory):
    """SINet (seeded random weights, 224×224) exported to ONNX and TFLite fp32: a small real artifact folder."""
    out = tmp_path_factory.mktemp("profile") / "sinet"
    export_model(ExportRequest("sinet", targets=["onnx", "tflite"], precisions=["fp32"], random_weights=True, out=out))
    return out


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_the_dissertation_protocol_is_the_iphone_xs_profile():
    device = load_device("iphone-xs")
    assert (device.protocol.iterations, device.protocol.wait_s, device.compute_units) == (100, 2.0, "ALL")
    assert device.runtime == "coreml" and set(device.report) == {"min", "mean", "max"}
    assert {"iphone-xs", "macos", "android", "cpu"} <= set(device_names())


def test_min_time_keeps_measuring_past_the_iterations():
    stats = measure(lambda: time.sleep(0.002), iterations=2, warmup=0, min_time_s=0.03)
    assert stats.count >= 10  # 2 iterations were asked, but 30 ms of 2 ms runs need ~15


def test_profile_on_cpu_honours_the_wait_and_keeps_raw_samples(sinet_folder):
    wait, iterations = 0.05, 6
    result = profile(ProfileRequest(str(sinet_folder), "cpu", iterations=iterations, warmup=1, wait_s=wait))
    assert schema_errors(result) == []
    assert result["fallback"] is False and result["runtime"]["name"] == "onnxruntime"
    assert len(result["samples_ms"]) == iterations and result["stats_ms"]["count"] == iterations
    run_s = sum(result["samples_ms"]) / 1e3
    # Measured phase ≈ iterations × run + (iterations − 1) × wait (plus the first and warm-up runs).
    assert result["wall_s"] >= run_s + (iterations - 1) * wait
    assert result["wall_s"] <= run_s + (iterations - 1) * wait + 2.0
    assert result["load_ms"] > 0 and result["first_ms"] > 0
    assert len(result["artifact"]["sha256"]) == 64


def test_unreachable_iphone_falls_back_to_the_closest_host_artifact(sinet_folder):
    result = profile(ProfileRequest(str(sinet_folder), "iphone-xs", iterations=3, warmup=0, wait_s=0.0))
    assert result["fallback"] is True and "phone" in result["fallback_reason"]
    assert result["device"]["name"] == "iphone-xs" and result["measured_on"] == "host"
    # No Core ML artifact runs here; TFLite (a mobile runtime) comes before ONNX.
    assert (result["artifact"]["target"], result["runtime"]["name"]) == ("tflite", "litert")
    with pytest.raises(DeviceError, match="not reachable"):
        profile(ProfileRequest(str(sinet_folder), "iphone-xs", iterations=3, fallback=False))


def test_profile_cli_writes_a_result_that_report_re_renders(sinet_folder, tmp_path):
    out = tmp_path / "sinet-cpu.json"
    result = runner.invoke(app, ["profile", str(sinet_folder), "--runtime", "litert", "-n", "5", "--warmup", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    assert saved["runtime"]["name"] == "litert" and saved["artifact"]["target"] == "tflite"
    rendered = runner.invoke(app, ["report", str(out), "--markdown"])
    assert rendered.exit_code == 0 and "| cpu | host | litert" in rendered.output


def test_bad_input_is_one_line_and_exit_2(sinet_folder, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something-else"}))
    cases = [
        (["profile", str(sinet_folder), "--device", "pixel-99"], "unknown device 'pixel-99'"),
        (["profile", str(sinet_folder), "--device", "iphone-xs", "--no-fallback"], "not reachable"),
        (["profile", str(sinet_folder / "model.onnx"), "--runtime", "litert"], "litert runs tflite artifacts"),
        (["profile", str(sinet_folder), "-n", "0"], "iterations must be positive"),
        (["profile", str(tmp_path / "missing.onnx")], "artifact not found"),
        (["report", str(tmp_path / "broken.json")], "is not JSON"),
        (["report", str(tmp_path / "other.json")], "not a mobileseg latency result"),
        (["sweep", "dilation", "--rates", "2,x"], "comma-separated"),
        (["sweep", "dilation", "--block", "conv5"], "unknown block"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in error_line(result), args


def test_android_protocol_maps_onto_benchmark_model_flags_and_its_output_parses():
    flags = benchmark_flags(Protocol(warmup=3, iterations=50, wait_s=2.0, threads=4), "/data/local/tmp/m.tflite")
    assert flags == ["--graph=/data/local/tmp/m.tflite", "--warmup_runs=3", "--num_runs=50", "--min_secs=0",
                     "--run_delay=2", "--num_threads=4"]  # fmt: skip
    # The two summary lines benchmark_model prints (the warm-up line first, then the measured runs).
    output = (
        "count=3 first=31210 curr=25400 min=25400 max=31210 avg=27001 std=2400\n"
        "count=50 first=25120 curr=24410 min=24090 max=27511 avg=24630.8 std=512\n"
        "Inference timings in us: Init: 35114, First inference: 31210, Warmup (avg): 25821.2, Inference (avg): 24630.8\n"
    )
    parsed = parse_benchmark_output(output)
    assert parsed["stats"]["count"] == 50 and parsed["stats"]["min"] == pytest.approx(24.09)
    assert parsed["stats"]["mean"] == pytest.approx(24.6308) and parsed["init_ms"] == pytest.approx(35.114)
    with pytest.raises(DeviceError):
        parse_benchmark_output("ERROR: model not found")


def test_dilation_sweep_records_graph_facts_and_draws_the_plot(tmp_path):
    out = tmp_path / "sweep.json"
    result = runner.invoke(app, ["sweep", "dilation", "--rates", "1,2", "--channels", "8", "--size", "24x24",
                                 "-n", "3", "--warmup", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    sweep = load_result(out)
    assert {(r["rate"], r["runtime"]) for r in sweep["rows"]} == {(1, "onnxruntime"), (2, "onnxruntime"), (1, "litert"), (2, "litert")}
    assert len({r["macs"] for r in sweep["rows"]}) == 1  # dilation does not change the MACs
    facts = {(r["rate"], r["target"]): r["graph"] for r in sweep["rows"]}
    assert facts[(2, "onnx")]["conv_dilations"] == [1, 2] and facts[(2, "onnx")]["dilation"] == "native"
    assert facts[(2, "tflite")]["dilation"] in ("native", "space_to_batch")
    assert all(r["quoted_iphone_xs_ms"] is None for r in sweep["rows"])  # quoted only for the Table 4.4 setup
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    write_result(sweep, tmp_path / "copy.json")
    assert runner.invoke(app, ["report", str(tmp_path / "copy.json"), "--plot", str(tmp_path / "again.png")]).exit_code == 0
    assert (tmp_path / "again.png").is_file()


@pytest.mark.parametrize("block", ["mobilenet", "fire"])
def test_the_thesis_atrous_blocks_are_swept_too(tmp_path, block):
    out = tmp_path / "sweep.json"
    result = runner.invoke(app, ["sweep", "dilation", "--block", block, "--rates", "1,3", "--channels", "16", "--size", "24x24",
                                 "-t", "onnx", "-n", "2", "--warmup", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = load_result(out)["rows"]
    facts = {r["rate"]: r["graph"] for r in rows}
    assert facts[3]["conv_dilations"] == [1, 3] and facts[3]["dilation"] == "native"
    assert len({r["macs"] for r in rows}) == 1


def test_pytorch_eager_is_profiled_from_the_folders_recipe_and_weights(sinet_folder):
    result = profile(ProfileRequest(str(sinet_folder), "cpu", runtime="torch", iterations=3, warmup=0))
    assert (result["runtime"]["name"], result["artifact"]["target"]) == ("torch", "torch")
    assert result["artifact"]["sha256"] == "random-weights" and schema_errors(result) == []
