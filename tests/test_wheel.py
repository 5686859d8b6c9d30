"""A wheel built from this tree, installed into a fresh environment (not an editable install of the
source tree), lists the zoo and exports: the recipes and device profiles travel inside the package."""

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import official_weights

REPO = Path(__file__).resolve().parent.parent


def test_a_wheel_install_lists_the_zoo_and_exports(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "artifacts", "results", "build", "*.egg-info", "__pycache__", ".pytest_cache"))  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("mobileseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"mobileseg/export_recipes/sinet.yaml", "mobileseg/devices/cpu.yaml"} <= set(names)

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    # The dependencies come from this environment's packages as a plain path entry: its editable install of
    # the source tree is a .pth file there, which a path entry does not run, so `mobileseg` is the wheel's.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    where = subprocess.run([python, "-c", "import mobileseg; print(mobileseg.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path, check=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site), where

    mobileseg = env / "bin" / "mobileseg"
    models = subprocess.run([mobileseg, "models", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert models.returncode == 0, models.stderr
    assert {row["name"] for row in json.loads(models.stdout)} >= {"sinet", "c3net"}
    out = tmp_path / "sinet"
    export = subprocess.run([mobileseg, "export", "sinet", "-t", "onnx", "--weights", official_weights("sinet"), "--out", out],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    assert json.loads((out / "manifest.json").read_text())["parity"]["passed"] is True
    devices = subprocess.run([mobileseg, "devices", "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert devices.returncode == 0 and "iphone-xs" in devices.stdout
