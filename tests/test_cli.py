import json

import pytest

from typer.testing import CliRunner

from mobileseg.cli import app

runner = CliRunner()


def test_help_and_models():
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["sinet"]["params"] == 86_910 and abs(rows["sinet"]["gmacs"] - 0.0639) < 1e-3


def _one_error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_user_errors_exit_2_with_one_line(tmp_path):
    cases = [
        (["export", "sinett", "--out", str(tmp_path / "x")], "unknown model 'sinett'"),
        (["export", "sinet", "--input-size", "225x224", "--out", str(tmp_path / "x")], "multiples of 32"),
        (["export", "sinet", "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x")], "checkpoint not found"),
        (["verify", str(tmp_path / "nothing")], "artifact folder not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in _one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_export_then_verify_gate(tmp_path):
    out = tmp_path / "sinet"
    result = runner.invoke(app, ["export", "sinet", "--target", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and (out / "manifest.json").is_file()
    cached = runner.invoke(app, ["export", "sinet", "--target", "onnx", "--out", str(out)])
    assert cached.exit_code == 0 and "up to date" in cached.output  # same recipe, weights, tools, code
    again = runner.invoke(app, ["export", "sinet", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in _one_error_line(again)
    verified = runner.invoke(app, ["verify", str(out), "--report", str(tmp_path / "report.json")])
    assert verified.exit_code == 0, verified.output
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True
    (out / "model.onnx").write_bytes(b"corrupt")
    tampered = runner.invoke(app, ["verify", str(out)])
    assert tampered.exit_code == 2 and "does not match its manifest" in _one_error_line(tampered)


def test_no_float_fallback_reaches_both_targets_and_the_fingerprint(tmp_path):
    pytest.importorskip("coremltools")
    out = tmp_path / "sinet"
    from conftest import official_weights

    weights = str(official_weights("sinet"))
    args = ["export", "sinet", "--target", "coreml", "--precision", "fp16", "--weights", weights, "--out", str(out)]
    with_fallback = runner.invoke(app, args)
    assert with_fallback.exit_code == 0, with_fallback.output
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["options"]["float_fallback"] is True and "float_fallback" in entry
    without = runner.invoke(app, [*args, "--no-float-fallback", "--force"])
    assert without.exit_code == 0 and "up to date" not in without.output  # another fingerprint: exported again
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["options"]["float_fallback"] is False and "float_fallback" not in entry


def test_no_bias_correction_reaches_the_int8_file(tmp_path):
    pytest.importorskip("onnx2tf")
    out = tmp_path / "sinet"
    args = ["export", "sinet", "--target", "tflite", "--precision", "int8", "--random-weights", "--out", str(out)]
    result = runner.invoke(app, [*args, "--no-bias-correction"])
    assert result.exit_code in (0, 1), result.output  # 1: random weights may miss the int8 bounds
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["options"]["bias_correction"] is False and entry["bias_correction"] is None
    corrected = runner.invoke(app, [*args, "--force"])
    assert corrected.exit_code in (0, 1) and "up to date" not in corrected.output
    (entry,) = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert entry["options"]["bias_correction"] is True and entry["bias_correction"]["convolutions"] > 0
