"""Artifact folders: written in a temporary sibling folder, then renamed into place.

A folder holds the exported model files, ``manifest.json`` (sha256 of every other file, tool
versions, recipe and options, input/output spec, seed) and the parity report. An existing folder is
replaced only when asked (``force``), and only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from mobileseg.errors import ArtifactError
from mobileseg.zoo.checkpoint import sha256_file

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "mobileseg.artifact/1"
TRACKED_PACKAGES = (
    "torch", "numpy", "onnx", "onnxruntime", "onnxsim", "onnxscript",
    "coremltools", "onnx2tf", "tensorflow", "ai-edge-litert", "tflite-runtime",
)  # fmt: skip


def tool_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    from mobileseg import __version__

    versions = {"mobileseg": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_destination(out: Path, force: bool) -> None:
    """Fail up front (before any work) when ``out`` exists and may not be replaced."""
    if out.exists() and not force:
        raise ArtifactError(f"output folder {out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output path {out} exists and is not a folder")


@contextlib.contextmanager
def staging_folder(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; on success rename it to ``out``, else delete it."""
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(retired / out.name)
            try:
                staging.rename(out)
            except OSError:
                (retired / out.name).rename(out)  # put the previous artifact back
                raise
            finally:
                if out.exists():  # else the previous artifact could not be restored: keep it in `retired`
                    shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest, by relative POSIX path."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_manifest(folder: Path, manifest: dict) -> dict:
    manifest = {"schema": MANIFEST_SCHEMA, **manifest, "files": file_hashes(folder)}
    write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ArtifactError(f"artifact folder not found: {folder}")
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a mobileseg artifact folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise ArtifactError(f"{path}: unsupported manifest schema {manifest.get('schema')!r}")
    return manifest


def check_hashes(folder: Path, manifest: dict) -> list[str]:
    """Files whose sha256 no longer matches the manifest (or that are missing)."""
    problems = []
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} changed since export (sha256 mismatch)")
    return problems
