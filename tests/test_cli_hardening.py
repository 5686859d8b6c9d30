"""The promises every command keeps, tried as a user and a CI system would: a mistake is one line and exit 2,
a parity failure 1, an internal error 3 with its traceback in a log; nothing half-written, nothing lost,
one writer per folder. Real CLI processes where the behaviour is the process's (races, signals, missing
packages, crashes)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import official_weights
from mobileseg.cli import app

runner = CliRunner()
RECIPES = Path(__file__).resolve().parent.parent / "export_recipes"


def cli(*args, env=None, cwd=None, timeout=600, prelude=""):
    """``mobileseg ARGS`` as a separate process (``prelude``: Python run before the CLI, to take a package away)."""
    code = f"{prelude}\nfrom mobileseg.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)  # fmt: skip


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    """An ONNX-only SINet artifact folder (official weights)."""
    out = tmp_path_factory.mktemp("artifacts") / "sinet"
    result = runner.invoke(app, ["export", "sinet", "-t", "onnx", "--weights", str(official_weights("sinet")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _recipe(tmp_path, name, edit):
    text = (RECIPES / "sinet.yaml").read_text()
    path = tmp_path / name
    path.write_bytes(edit(text) if callable(edit) else edit)
    return path


def _manifest(tmp_path, source, edit):
    folder = tmp_path / f"tampered-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_every_mistake_is_one_line_and_exit_2(tmp_path, onnx_folder):
    (tmp_path / "afile").write_text("a file")
    replace_size = lambda text: text.replace("size: [224, 224]", "size: big").encode()  # noqa: E731
    cases = {
        "unknown model": (["export", "nosuchnet"], "unknown model 'nosuchnet'"),
        "zero size": (["export", "sinet", "--input-size", "0x0"], "must be positive"),
        "negative size": (["export", "sinet", "--input-size", "-64x64"], "is not HxW"),
        "letters": (["export", "sinet", "--input-size", "abcxdef"], "is not HxW"),
        "huge size": (["export", "sinet", "--input-size", "100000x100000"], "larger than mobileseg exports"),
        "opset text": (["export", "sinet", "--opset", "abc"], "'--opset'"),
        "opset range": (["export", "sinet", "-t", "onnx", "--opset", "9", "--out", tmp_path / "o"], "opset 9 is not supported"),
        "sweep size": (["sweep", "dilation", "--size", "0x0"], "--size '0x0'"),
        "recipe not UTF-8": (["export", "sinet", "--recipe", _recipe(tmp_path, "a.yaml", b"\xff\xfemodel: sinet\n")], "not UTF-8"),
        "recipe random": (["export", "sinet", "--recipe", _recipe(tmp_path, "b.yaml", lambda t: t.replace("random: 2", "random: -3").encode())],
                          "parity.random must be between 0 and 32, not -3"),
        "recipe size": (["export", "sinet", "--recipe", _recipe(tmp_path, "c.yaml", replace_size)], "input.size must be [height, width]"),
        "recipe list": (["export", "sinet", "--recipe", _recipe(tmp_path, "d.yaml", b"- 1\n- 2\n")], "must be a YAML mapping"),
        "out under a file": (["export", "sinet", "-t", "onnx", "--out", tmp_path / "afile" / "x"], "afile is a file, not a folder"),
        "out unwritable": (["export", "sinet", "-t", "onnx", "--out", "/proc/mobileseg-test/x"], "cannot write /proc/mobileseg-test/x"),
        "files a string": (["verify", _manifest(tmp_path, onnx_folder, lambda m: m.update(files="model.onnx"))], "'files' must map"),
        "model missing": (["verify", _manifest(tmp_path, onnx_folder, lambda m: m.pop("model"))], "'model' must be an object"),
        "artifacts null": (["verify", _manifest(tmp_path, onnx_folder, lambda m: m.update(artifacts=None))], "'artifacts' must be"),
        "escaping file": (["verify", _manifest(tmp_path, onnx_folder, lambda m: m["artifacts"][0].update(file="/etc/passwd"))],
                          "is not a path inside the folder"),
        "runtime for no file": (["verify", onnx_folder, "--runtime", "litert"], "runtime litert runs tflite artifacts"),
        "unknown runtime": (["verify", onnx_folder, "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        "precision not there": (["profile", onnx_folder, "--precision", "int8", "-n", "1"], "has no int8 artifact for onnxruntime"),
        "report not ours": (["verify", onnx_folder, "--report", _recipe(tmp_path, "mine.json", b"{}")], "was not written by mobileseg"),
        "vos artifact missing": (["vos", "run", tmp_path / "nosuch", "--video", "v", "--mask", "m.png"], "artifact folder not found"),
        "result not JSON": (["report", _recipe(tmp_path, "r.json", b"\xff\x00")], "r.json is not"),
    }
    for name, (args, message) in cases.items():
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, (name, result.output)
        assert message in one_error_line(result.output), name
    assert not (tmp_path / "o").exists()


def test_heavy_libraries_load_only_after_the_arguments_are_checked(tmp_path, onnx_folder):
    probe = ("import sys\nfrom typer.testing import CliRunner\nfrom mobileseg.cli import app\n"
             "for args in sys.argv[1:]:\n"
             "    result = CliRunner().invoke(app, args.split())\n"
             "    assert result.exit_code in (0, 2), (args, result.output)\n"
             "heavy = sorted(m for m in ('torch', 'tensorflow', 'coremltools', 'onnx2tf', 'onnxruntime') if m in sys.modules)\n"
             "print(','.join(heavy))")  # fmt: skip
    calls = ["export nosuchnet", "export sinet --input-size 64x63", "verify /nonexistent", "--help",
             f"export sinet -t onnx --weights {official_weights('sinet')} --out {onnx_folder}",  # a cache hit
             "profile nosuchnet", "sweep dilation --size 1x", f"verify {onnx_folder} --runtime litert"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, *calls], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""  # none of them


def test_an_internal_error_exits_3_with_its_traceback_in_a_log(tmp_path):
    broken = "import mobileseg.zoo.macs as macs\nmacs.count_macs = lambda *args: 1 / 0"
    result = cli("models", env={"MOBILESEG_LOG_DIR": str(tmp_path)}, prelude=broken)
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "internal error" in line and "ZeroDivisionError" in line
    (log,) = tmp_path.iterdir()
    assert str(log) in line and "Traceback" in log.read_text() and "command: mobileseg models" in log.read_text()
    debug = cli("--debug", "models", env={"MOBILESEG_LOG_DIR": str(tmp_path)}, prelude=broken)
    assert debug.returncode == 3 and "Traceback" in debug.stderr and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("package,target,extra", [
    ("onnx2tf", "tflite", "tflite"), ("tensorflow", "tflite", "tflite"), ("coremltools", "coreml", "coreml"),
])  # fmt: skip
def test_a_missing_optional_package_is_one_line(tmp_path, package, target, extra):
    result = cli("export", "sinet", "-t", target, "--out", tmp_path / "x", prelude=f"import sys\nsys.modules[{package!r}] = None")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert f"needs the Python package '{package}'" in line and f"mobileseg[{extra}]" in line
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runtime_package_is_a_skipped_row_or_one_line(onnx_folder):
    gone = "import sys\nsys.modules['onnxruntime'] = None"
    verified = cli("verify", onnx_folder, prelude=gone)  # nothing could run: not a parity failure
    assert verified.returncode == 2 and "no runtime here can run" in one_error_line(verified.stderr)
    profiled = cli("profile", onnx_folder, "-n", "1", prelude=gone)
    assert profiled.returncode == 2 and "'onnxruntime' is not installed" in one_error_line(profiled.stderr)


def test_a_file_the_manifest_does_not_list_fails_verify_and_the_cache(tmp_path, onnx_folder):
    folder = tmp_path / "sinet"
    shutil.copytree(onnx_folder, folder)
    (folder / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["verify", str(folder)])
    assert result.exit_code == 2 and "notes.txt is not listed in the manifest" in one_error_line(result.output)
    again = runner.invoke(app, ["export", "sinet", "-t", "onnx", "--out", str(folder)])  # not a cache hit: refused
    assert again.exit_code == 2 and "holds files mobileseg did not write (notes.txt)" in one_error_line(again.output)
    (folder / "notes.txt").unlink()
    assert "up to date" in runner.invoke(app, ["export", "sinet", "-t", "onnx", "--out", str(folder)]).output


def _wait_for(predicate, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _as_in_a_terminal() -> None:
    # A suite started in the background (`pytest &`, nohup) hands its children SIGINT ignored, and a Python
    # started that way never raises KeyboardInterrupt: the export would run to its end and exit 0.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args, tmpdir):
    code = "from mobileseg.cli import main\nmain()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(tmpdir)}, preexec_fn=_as_in_a_terminal)  # fmt: skip


def test_two_writers_of_one_folder_and_a_reader_during_a_replacement(tmp_path):
    out, scratch = tmp_path / "race", tmp_path / "tmp"
    scratch.mkdir()
    first = _start("export", "sinet", "-t", "onnx", "-t", "tflite", "-p", "fp32", "--out", out, tmpdir=scratch)
    _wait_for(lambda: any(".mobileseg-staging-" in p.name for p in tmp_path.iterdir()))
    second = cli("export", "sinet", "-t", "onnx", "--out", out)
    assert second.returncode == 2
    assert f"is being written or read by process {first.pid} (mobileseg export sinet" in one_error_line(second.stderr)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert (out / "model_fp32.tflite").is_file()
    before = json.loads((out / "manifest.json").read_text())
    # A verify that starts while `export --force` replaces the folder waits for it and checks the new one whole.
    writer = _start("export", "sinet", "-t", "onnx", "--force", "--no-cache", "--out", out, tmpdir=scratch)
    _wait_for(lambda: any(".mobileseg-staging-" in p.name for p in tmp_path.iterdir()))
    reader = cli("verify", out)
    assert writer.wait(timeout=600) == 0
    assert reader.returncode == 0, reader.stdout + reader.stderr
    assert "onnxruntime" in reader.stdout and "litert" not in reader.stdout  # the new folder, not the old one
    assert json.loads((out / "manifest.json").read_text())["files"] != before["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race", "tmp"] and list(scratch.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_export_leaves_nothing_for_long(tmp_path, sig):
    out, scratch = tmp_path / "new" / "sinet", tmp_path / "tmp"
    scratch.mkdir()
    process = _start("export", "sinet", "-t", "onnx", "-t", "tflite", "-p", "fp32", "--out", out, tmpdir=scratch)
    _wait_for(lambda: out.parent.is_dir() and any(".mobileseg-staging-" in p.name for p in out.parent.iterdir()))
    time.sleep(1.0)
    process.send_signal(sig)
    code = process.wait(timeout=120)
    if sig == signal.SIGINT:
        assert code == 130 and not (tmp_path / "new").exists() and list(scratch.iterdir()) == []
        return
    assert code == -signal.SIGKILL and list(scratch.iterdir())  # what a killed process cannot remove itself
    again = cli("export", "sinet", "-t", "onnx", "--out", out, env={"TMPDIR": str(scratch)})
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["sinet"] and list(scratch.iterdir()) == []
