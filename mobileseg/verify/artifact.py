"""Verification of an artifact folder: integrity (manifest hashes) and numerical parity against PyTorch."""

from __future__ import annotations

from pathlib import Path

from mobileseg.errors import ArtifactError, CheckpointError, RuntimeUnavailableError
from mobileseg.export.artifact import check_hashes, read_manifest
from mobileseg.hashing import sha256_file
from mobileseg.outputs import reading
from mobileseg.recipes import parse_recipe
from mobileseg.verify.results import ParityReport

__all__ = ["verify_artifact", "ParityReport"]


def verify_artifact(
    folder: str | Path,
    weights: str | Path | None = None,
    runtimes: list[str] | None = None,
    threads: int | None = 1,
) -> ParityReport:
    """Re-check an artifact folder: its files against the manifest, then every artifact on every available
    runtime against a freshly built PyTorch reference (with the weights recorded in the manifest, or
    ``weights``, which must have the same sha256). `RuntimeUnavailableError` when no runtime here can run
    any of them: that is not a parity failure."""
    folder = Path(folder)
    with reading(folder):
        manifest, recipe, reference = reference_for(folder, weights, runtimes)
        from mobileseg.verify.parity import run_parity

        report = run_parity(
            reference, recipe, folder, manifest["artifacts"], manifest["model"]["output_kind"], runtimes, threads
        )
    if report.results and all(r.status == "skipped" for r in report.results):
        reasons = sorted({f"{r.runtime} ({r.reason})" for r in report.results})
        raise RuntimeUnavailableError(f"no runtime here can run the artifacts of {folder}: {'; '.join(reasons)}")
    return report


def check_runtimes_apply(folder: Path, manifest: dict, runtimes: list[str] | None) -> None:
    """`ArtifactError` when a runtime asked for runs none of the folder's targets (a CI gate must not read
    an empty comparison as a parity failure)."""
    from mobileseg.runtimes import get_runtime, runtimes_for

    targets = sorted({entry["target"] for entry in manifest["artifacts"]})
    for name in runtimes or []:
        target = get_runtime(name).target
        if target not in targets:
            suitable = [r.name for t in targets for r in runtimes_for(t)]
            raise ArtifactError(f"runtime {name} runs {target} artifacts; {folder} has {', '.join(targets)} "
                                f"(runtimes for it: {', '.join(suitable)})")  # fmt: skip


def reference_for(folder: Path, weights: str | Path | None = None, runtimes: list[str] | None = None):
    """(manifest, recipe, PyTorch reference) of an artifact folder whose files match its manifest."""
    from mobileseg.export.pipeline import build_reference

    manifest = read_manifest(folder)
    if manifest.get("kind") is not None:
        raise ArtifactError(f"{folder} is a {manifest['kind']} artifact folder: use `mobileseg {manifest['kind']} verify`")
    problems = check_hashes(folder, manifest)
    if problems:
        raise ArtifactError(f"{folder} does not match its manifest: {'; '.join(problems)}")
    check_runtimes_apply(folder, manifest, runtimes)
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
