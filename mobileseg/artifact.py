"""Artifact folders: the manifest that describes one and proves it whole.

A folder holds the exported model files, ``manifest.json`` (sha256 of every other file, tool versions,
recipe and options, input/output spec, seed) and the parity report. Folders are written through
`mobileseg.outputs.staging_folder` (a staging folder renamed into place, under a lock). A manifest read
back is checked for the shape of every field mobileseg uses, so a damaged one is one clear error.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath

from mobileseg.errors import ArtifactError
from mobileseg.hashing import sha256_file
from mobileseg.outputs import FOLDER_MANIFEST, foreign_entries

MANIFEST = FOLDER_MANIFEST
MANIFEST_SCHEMA = "mobileseg.artifact/1"
GRAPHS_KIND = "graphs"  # a folder of named graphs (a user's model) that keeps its reference program
REFERENCE_PROGRAM = "reference/program.pt2"  # that program (torch.export), which verify rebuilds the reference from
OUTPUT_KINDS = ("softmax_logits", "sigmoid_logit")
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


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest, by relative POSIX path."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_manifest(folder: Path, manifest: dict, schema: str = MANIFEST_SCHEMA) -> dict:
    manifest = {"schema": schema, **manifest, "files": file_hashes(folder)}
    write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path, schema: str = MANIFEST_SCHEMA) -> dict:
    """The manifest of ``folder``, its fields checked (`check_manifest`); `ArtifactError` names what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder not found: {folder}")
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a mobileseg artifact folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{path} is not readable JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is not a JSON object")
    if manifest.get("schema") != schema:
        raise ArtifactError(f"{path}: unsupported manifest schema {manifest.get('schema')!r} (expected {schema!r})")
    check_manifest(manifest, path)
    return manifest


def _relative_file(name: object) -> bool:
    """A file name a manifest may hold: a relative POSIX path that stays inside the folder."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def check_manifest(manifest: dict, path: Path) -> None:
    """Raise `ArtifactError` when a field mobileseg reads has the wrong type or points outside the folder."""

    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{path}: {what}")

    files = manifest.get("files")
    if not isinstance(files, Mapping) or not all(_relative_file(k) and isinstance(v, str) for k, v in files.items()):
        raise bad("'files' must map each file (a path inside the folder) to its sha256")
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list) or not artifacts:
        raise bad("'artifacts' must be a non-empty list")
    for entry in artifacts:
        if not isinstance(entry, Mapping):
            raise bad("each entry of 'artifacts' must be an object")
        if not all(isinstance(entry.get(key), str) for key in ("target", "precision", "file")):
            raise bad("each entry of 'artifacts' needs 'target', 'precision' and 'file' strings")
        if not _relative_file(entry["file"]):
            raise bad(f"artifact file {entry['file']!r} is not a path inside the folder")
        if "io" in entry and not isinstance(entry["io"], Mapping):
            raise bad(f"'io' of {entry['file']} must be an object")
        for key in ("input", "output", "tensors"):
            if key in entry.get("io", {}) and not isinstance(entry["io"][key], Mapping):
                raise bad(f"'io.{key}' of {entry['file']} must be an object")
    if manifest.get("kind") is None:  # a model export (VOS folders describe their subgraphs instead)
        model = manifest.get("model")
        if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
            raise bad("'model' must be an object with a 'name'")
        if model.get("output_kind") not in OUTPUT_KINDS:
            raise bad(f"'model.output_kind' must be one of {', '.join(OUTPUT_KINDS)}")
        weights = model.get("weights")
        if not isinstance(weights, Mapping) or not all(
            key in weights and isinstance(weights[key], (str, type(None))) for key in ("path", "sha256")
        ):
            raise bad("'model.weights' must be an object with 'path' and 'sha256' (strings or null)")
        if not isinstance(manifest.get("recipe"), Mapping):
            raise bad("'recipe' must be an object")


def check_hashes(folder: Path, manifest: dict) -> list[str]:
    """What makes ``folder`` differ from its manifest: files missing or changed since export, and files
    the manifest does not list (folders hold no data and do not count)."""
    problems = []
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} changed since export (sha256 mismatch)")
    problems += [f"{name} is not listed in the manifest" for name in foreign_entries(folder) or []]
    return problems


def graph_name(entry: dict) -> str | None:
    """The graph an artifact entry belongs to (``subgraph`` in VOS folders written before ``graph``)."""
    return entry.get("graph", entry.get("subgraph"))
