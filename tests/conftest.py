"""Shared fixtures: the authors' official checkpoints live in ../shared/weights (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mobileseg import zoo

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = Path(os.environ.get("MOBILESEG_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))

# Sizes that keep the suite fast while respecting each model's size rule.
TEST_SIZES = {"sinet": (224, 224), "extremec3net": (224, 224), "sinet-cityscapes": (256, 512), "c3net": (256, 512), "c3netv2": (256, 512)}


def official_weights(name: str) -> Path:
    path = WEIGHTS_DIR / zoo.spec(name).checkpoint.filename
    if not path.is_file():
        pytest.skip(f"official checkpoint {path} not present")
    return path


@pytest.fixture(autouse=True)
def _weights_env(monkeypatch):
    monkeypatch.setenv("MOBILESEG_WEIGHTS_DIR", str(WEIGHTS_DIR))


def results_by(report) -> dict:
    """A parity report's results by (precision, runtime)."""
    return {(r.precision, r.runtime): r for r in report.results}


def assert_fallback_reached_goal(manifest: dict, target: str, precision: str) -> dict:
    """The artifact's float fallback started below its goal, ended at or above it, and kept only some ops
    in float; returns the record."""
    (entry,) = [a for a in manifest["artifacts"] if a["target"] == target and a["precision"] == precision]
    fallback = entry["float_fallback"]
    assert fallback["agreement_before"] < fallback["goal"] <= fallback["agreement"]
    assert 0 < fallback["float_ops"] < fallback["quantised_ops"]
    return fallback
