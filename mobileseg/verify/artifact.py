"""Verification of an artifact folder: integrity (manifest hashes) and numerical parity against PyTorch."""

from __future__ import annotations

from pathlib import Path

from mobileseg.errors import ArtifactError, CheckpointError
from mobileseg.export.artifact import check_hashes, read_manifest
from mobileseg.recipes import parse_recipe
from mobileseg.verify.parity import ParityReport, run_parity
from mobileseg.zoo.checkpoint import sha256_file

__all__ = ["verify_artifact", "ParityReport"]


def verify_artifact(
    folder: str | Path,
    weights: str | Path | None = None,
    runtimes: list[str] | None = None,
    threads: int | None = 1,
) -> ParityReport:
    """Re-check an artifact folder: its files against the manifest, then every artifact on every available
    runtime against a freshly built PyTorch reference (with the weights recorded in the manifest, or
    ``weights``, which must have the same sha256)."""
    folder = Path(folder)
    manifest, recipe, reference = reference_for(folder, weights)
    return run_parity(
        reference, recipe, folder, manifest["artifacts"], manifest["model"]["output_kind"], runtimes, threads
    )


def reference_for(folder: Path, weights: str | Path | None = None):
    """(manifest, recipe, PyTorch reference) of an artifact folder whose files match its manifest."""
    from mobileseg.export.pipeline import build_reference

    manifest = read_manifest(folder)
    problems = check_hashes(folder, manifest)
    if problems:
        raise ArtifactError(f"{folder} does not match its manifest: {'; '.join(problems)}")
    recipe = parse_recipe(manifest["recipe"], f"{folder}/manifest.json")
    record = manifest["model"]["weights"]
    path = Path(weights) if weights else (Path(record["path"]) if record["path"] else None)
    if record["sha256"]:
        if path is None or not path.is_file():
            raise CheckpointError(
                f"the weights this artifact was exported with are not at {path}; pass --weights PATH "
                f"(sha256 {record['sha256'][:12]}…)"
            )
        if sha256_file(path) != record["sha256"]:
            raise CheckpointError(f"{path} is not the checkpoint this artifact was exported with (sha256 differs)")
    elif weights:
        raise CheckpointError("this artifact was exported with random weights; --weights does not apply")
    return manifest, recipe, build_reference(recipe, path if record["sha256"] else None)
