"""A user's own model, written here (not a zoo network): two inputs, two outputs, through export to every
target, verify (the folder alone, and a single file against a reference), profile (the folder and bare
files), from a factory and from a saved torch.export program; and every user mistake as one line, exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mobileseg.cli import app

runner = CliRunner()

MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    class TwoHead(nn.Module):
        """A picture and a prior map in; class logits and a depth map (half resolution) out."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.PReLU(24))
            self.seg = nn.Conv2d(24, 3, 1)
            self.depth = nn.Conv2d(24, 1, 1)

        def forward(self, image, prior):
            x = self.down(self.stem(torch.cat([image, prior], dim=1)))
            up = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return self.seg(up), torch.sigmoid(self.depth(x))


    def build():
        torch.manual_seed(0)
        model = TwoHead()
        with torch.no_grad():  # trained-looking batch-norm statistics
            model.stem[1].running_mean.uniform_(-0.2, 0.2)
            model.stem[1].running_var.uniform_(0.5, 2.0)
        return model


    class Branchy(nn.Module):
        def forward(self, image, prior):
            if image.sum() > 0:  # data-dependent control flow: no static graph
                return image, prior
            return -image, prior


    def branchy():
        return Branchy()


    def one_output():
        return nn.Conv2d(3, 1, 1)


    def not_a_module():
        return 42
''')

RECIPE = textwrap.dedent('''
    name: twohead
    inputs:
      - {name: image, shape: [1, 3, 64, 96], format: rgb01}
      - {name: prior, shape: [1, 1, 64, 96]}
    outputs:
      - {name: logits, kind: logits}
      - {name: depth}
    parity: {photos: [astronaut, coffee], random: 1, seed: 0}
    targets:
      onnx: {}
      coreml: {precisions: [fp32, fp16]}
      tflite: {precisions: [fp32, fp16]}
''')


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    (folder / "twohead.py").write_text(MODEL)
    (folder / "twohead.yaml").write_text(RECIPE)
    return folder


@pytest.fixture(scope="module")
def exported(user_files) -> Path:
    out = user_files / "artifact"
    result = runner.invoke(app, ["export", "--model", f"{user_files}/twohead.py:build", "--recipe", str(user_files / "twohead.yaml"),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_every_target_with_the_names_kept(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["kind"] == "graphs" and manifest["parity"]["passed"]
    assert {(e["target"], e["precision"]) for e in manifest["artifacts"]} == {
        ("onnx", "fp32"), ("coreml", "fp32"), ("coreml", "fp16"), ("tflite", "fp32"), ("tflite", "fp16")}
    assert manifest["model"]["reference"]["file"] in manifest["files"]  # the torch.export program, hash-checked
    outputs = {s["name"]: s["shape"] for s in manifest["graphs"][0]["outputs"]}
    assert outputs == {"logits": [1, 3, 64, 96], "depth": [1, 1, 32, 48]}

    import onnx

    graph = onnx.load(str(exported / "onnx/twohead_fp32.onnx")).graph
    assert [i.name for i in graph.input] == ["image", "prior"] and [o.name for o in graph.output] == ["logits", "depth"]
    from coremltools.models.utils import load_spec

    spec = load_spec(str(exported / "coreml/twohead_fp32.mlpackage"))
    assert [i.name for i in spec.description.input] == ["image", "prior"]
    assert [o.name for o in spec.description.output] == ["logits", "depth"]
    tflite = next(e for e in manifest["artifacts"] if e["target"] == "tflite" and e["precision"] == "fp32")
    assert set(tflite["io"]["tensors"]["inputs"]) == {"image", "prior"}
    assert set(tflite["io"]["tensors"]["outputs"]) == {"logits", "depth"}

    report = json.loads((exported / "parity.json").read_text())
    fp32 = [r for r in report["results"] if r["precision"] == "fp32"]
    assert fp32 and all(r["status"] == "pass" and float(r["worst"]["max_rel"]) < 1e-5 for r in fp32)
    # both outputs are compared, each by its own name
    assert {c["input"] for c in fp32[0]["cases"]} == {"twohead.logits", "twohead.depth"}


def test_verify_rebuilds_the_reference_from_the_folder_alone(exported, tmp_path):
    moved = tmp_path / "elsewhere"
    import shutil

    shutil.copytree(exported, moved)  # no user source beside it: the folder keeps its program
    result = runner.invoke(app, ["verify", str(moved), "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    ran = {(r["target"], r["runtime"]) for r in report["results"] if r["status"] == "pass"}
    assert {("onnx", "onnxruntime"), ("coreml", "mil-reference"), ("tflite", "litert")} <= ran

    model = moved / "onnx/twohead_fp32.onnx"
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)
    result = runner.invoke(app, ["verify", str(moved)])
    assert result.exit_code == 2 and "does not match its manifest" in result.output


def test_a_changed_model_fails_verify_of_a_file_against_it(exported, user_files, tmp_path):
    command = ["verify", str(exported / "onnx/twohead_fp32.onnx"), "--reference", f"{user_files}/twohead.py:build",
               "--recipe", str(user_files / "twohead.yaml")]  # fmt: skip
    assert runner.invoke(app, command).exit_code == 0
    tflite = ["verify", str(exported / "tflite/twohead_fp16.tflite"), "--reference", f"{user_files}/twohead.py:build",
              "--recipe", str(user_files / "twohead.yaml"), "--precision", "fp16"]  # fmt: skip
    assert runner.invoke(app, tflite).exit_code == 0
    changed = tmp_path / "changed.py"
    changed.write_text(MODEL.replace("torch.manual_seed(0)", "torch.manual_seed(1)"))
    command[3] = f"{changed}:build"
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output  # a parity failure, not a user mistake


def test_profile_takes_the_folder_and_bare_files(exported, tmp_path):
    for path in (exported, exported / "onnx/twohead_fp32.onnx", exported / "tflite/twohead_fp32.tflite"):
        out = tmp_path / f"{path.name}.json"
        result = runner.invoke(app, ["profile", str(path), "--iterations", "3", "--warmup", "1", "--out", str(out)])
        assert result.exit_code == 0, result.output
        measured = json.loads(out.read_text())
        assert measured["stats_ms"]["median"] > 0
        assert measured["runtime"]["name"] == ("litert" if path.suffix == ".tflite" else "onnxruntime")
    # PyTorch eager on the folder's own reference program, fed every declared input
    result = runner.invoke(app, ["profile", str(exported), "--runtime", "torch", "--iterations", "3", "--warmup", "1",
                                 "--out", str(tmp_path / "torch.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "torch.json").read_text())["artifact"]["target"] == "torch"


def test_a_saved_program_exports_like_its_module(exported, user_files, tmp_path):
    import torch

    sys.path.insert(0, str(user_files))
    try:
        import twohead
    finally:
        sys.path.remove(str(user_files))
    program = torch.export.export(twohead.build().eval(), (torch.rand(1, 3, 64, 96), torch.rand(1, 1, 64, 96)))
    torch.export.save(program, str(tmp_path / "twohead.pt2"))
    out = tmp_path / "from-program"
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "twohead.pt2"), "--recipe", str(user_files / "twohead.yaml"),
                                 "--out", str(out), "-t", "onnx", "-t", "tflite", "-p", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    import onnxruntime as ort

    feeds = {"image": np.random.default_rng(0).random((1, 3, 64, 96), np.float32), "prior": np.ones((1, 1, 64, 96), np.float32)}
    ours = ort.InferenceSession(str(out / "onnx/twohead_fp32.onnx")).run(None, feeds)
    theirs = ort.InferenceSession(str(exported / "onnx/twohead_fp32.onnx")).run(None, feeds)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model,recipe_edit,message", [
    ("twohead.py:missing", None, "has no 'missing'"),
    ("twohead.py:not_a_module", None, "returned int, not a torch.nn.Module"),
    ("twohead.py:one_output", {"- {name: prior, shape: [1, 1, 64, 96]}": ""}, "returns 1 output(s)"),
    ("twohead.py:build", {"[1, 1, 64, 96]": "[1, 2, 64, 96]"}, "rejects the declared inputs (image [1, 3, 64, 96], prior [1, 2, 64, 96])"),
    ("twohead.py:branchy", None, "does not trace with torch.export"),
    ("nofile.py:x", None, "no such file nofile.py"),
    ("twohead.py:build", {"kind: logits": "kind: heatmap"}, "kind 'heatmap' is not one of"),
    ("twohead.py:build", {"coreml: {precisions: [fp32, fp16]}": "coreml: {precisions: [int8]}"}, "coreml exports your model as fp16, fp32, not int8"),
])  # fmt: skip
def test_user_mistakes_are_one_line_and_exit_2(user_files, tmp_path, model, recipe_edit, message):
    recipe = RECIPE
    for old, new in (recipe_edit or {}).items():
        recipe = recipe.replace(old, new)
    (tmp_path / "recipe.yaml").write_text(recipe)
    (tmp_path / "twohead.py").write_text(MODEL)
    result = subprocess.run([sys.executable, "-m", "mobileseg", "export", "--model", model, "--recipe", "recipe.yaml",
                             "--out", "out", "-t", "onnx"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_zoo_and_user_flags_do_not_mix(user_files):
    cases = [
        (["export", "sinet", "--model", "x.py:f"], "not both"),
        (["export"], "not neither"),
        (["export", "twohead.py:build"], "looks like your own model"),
        (["export", "--model", f"{user_files}/twohead.py:build"], "needs --recipe"),
        (["export", "--model", f"{user_files}/twohead.py:build", "--recipe", str(user_files / "twohead.yaml"), "--input-size", "64x64"],
         "--input-size applies to zoo models"),
        (["export", "sinet", "--set", "tflite.keep_nchw=true", "-t", "onnx"], "--set names tflite"),
        (["export", "sinet", "--set", "onnx.opset", "-t", "onnx"], "write TARGET.KEY=VALUE"),
        (["export", "sinet", "--set", "onnx.nosuch=1", "-t", "onnx", "--random-weights"], "unknown onnx option(s): nosuch"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_readme_quick_start_for_your_own_model_runs_as_written(tmp_path):
    """The README's own-model quick start, copied: its Python file, its recipe, then its commands."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    kinds = [kind for kind, _ in blocks]
    assert kinds[:3] == ["python", "yaml", "sh"], kinds
    (tmp_path / "mynet.py").write_text(blocks[0][1])
    (tmp_path / "mynet.yaml").write_text(blocks[1][1])
    binary = Path(sys.executable).parent
    for command in [line for line in blocks[2][1].splitlines() if line.strip() and not line.startswith("#")]:
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={"PATH": f"{binary}:/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])


def test_a_re_export_is_byte_identical(exported, user_files, tmp_path):
    """The same model and recipe give the same files: the saved program names the user's module stably,
    and Core ML packages' item identifiers are derived from their paths, not random."""
    again = tmp_path / "again"
    result = runner.invoke(app, ["export", "--model", f"{user_files}/twohead.py:build", "--recipe", str(user_files / "twohead.yaml"),
                                 "--out", str(again), "-t", "onnx", "-t", "coreml"])  # fmt: skip
    assert result.exit_code == 0, result.output
    import hashlib

    def digests(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in folder.rglob("*") if p.is_file() and p.name not in ("manifest.json", "parity.json", "parity.md")}  # fmt: skip

    first = {k: v for k, v in digests(exported).items() if not k.startswith("tflite/")}
    assert first and digests(again) == first


def test_the_parity_matrix_takes_a_users_folder(exported, tmp_path):
    out, markdown = tmp_path / "matrix.json", tmp_path / "matrix.md"
    result = runner.invoke(app, ["matrix", "--folder", str(exported), "--out", str(out), "--markdown", str(markdown)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert {r["model"] for r in rows} == {"twohead"} and all(r["status"] == "pass" for r in rows)
    assert {(r["target"], r["runtime"]) for r in rows} >= {("onnx", "onnxruntime"), ("coreml", "mil-reference"), ("tflite", "litert")}
    assert "| twohead |" in markdown.read_text()
