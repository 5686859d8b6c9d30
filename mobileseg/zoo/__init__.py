"""The model zoo: our own implementations of the source documents' networks, loading the authors' checkpoints.

>>> from mobileseg import zoo
>>> zoo.names()[:5]
['sinet', 'extremec3net', 'sinet-cityscapes', 'c3net', 'c3netv2']
>>> model = zoo.build("sinet", weights="sinet_portrait_eg1800.pth")   # eval mode, strict loading
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mobileseg.zoo import specs  # noqa: F401  (registration; imports no PyTorch)
from mobileseg.zoo._registry import UNPOOLING_FORMS, Checkpoint, ModelSpec, Normalization, get_spec, names, trained_names

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build", "names", "trained_names", "spec", "ModelSpec", "Normalization", "Checkpoint", "official_checkpoints", "UNPOOLING_FORMS"]


def spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a zoo model; raises `UnknownModelError` listing close names."""
    return get_spec(name)


def official_checkpoints() -> dict[str, str]:
    """sha256 of each official checkpoint → the zoo model it belongs to."""
    return {get_spec(n).checkpoint.sha256: n for n in trained_names()}


def build(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build zoo model ``name`` in eval mode, optionally loading the authors' checkpoint at ``weights``.

    The model's forward takes the authors' normalised NCHW float input and returns the authors' logits.
    Loading maps the authors' key names onto ours and is strict (`CheckpointError` names any bad key).
    A structure-only model (no trained weights exist) without ``weights`` gets `zoo.structure_only`'s
    seeded initialisation with statistics calibrated on the bundled photos, the same in every process.
    """
    from mobileseg.zoo.checkpoint import load_checkpoint

    model_spec = get_spec(name)
    if weights is None and model_spec.structure_only:
        from mobileseg.zoo.structure_only import calibrated_model

        return calibrated_model(model_spec)
    model = model_spec.builder()
    if weights is not None:
        load_checkpoint(model, weights, model_spec.key_rules, name, official_checkpoints())
    return model.eval()
