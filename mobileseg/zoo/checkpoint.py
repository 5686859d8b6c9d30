"""Reading the authors' checkpoints and mapping their key names onto ours, strictly.

A checkpoint is a plain ``state_dict``. Keys are renamed by an ordered list of regex rules: every rule
is applied, in order, to the result of the previous one (``re.sub``). A checkpoint already in our own
naming loads unchanged. Loading is strict: a missing, unexpected or mis-shaped key is a
`CheckpointError` naming it. The only tolerated absence is BatchNorm's ``num_batches_tracked`` counter,
which older PyTorch versions did not save and which does not affect inference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from mobileseg.errors import CheckpointError
from mobileseg.hashing import sha256_file

_SHOWN_KEYS = 4


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file as a flat ``{name: tensor}`` dict (unwrapping ``state_dict``/``model``/``module.``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a readable PyTorch state_dict (truncated or corrupt?): {reason}"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} is not a state_dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Map each source key to its new name by applying every ``(pattern, replacement)`` rule in order."""
    compiled = [(re.compile(p), r) for p, r in rules]
    renamed = {}
    for key in state:
        new = key
        for pattern, replacement in compiled:
            new = pattern.sub(replacement, new)
        renamed[key] = new
    return renamed


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    rules: Sequence[tuple[str, str]],
    model_name: str,
    known_checkpoints: Mapping[str, str] | None = None,
) -> None:
    """Load the checkpoint at ``path`` into ``model`` (strict), renaming the authors' keys with ``rules``.

    ``known_checkpoints`` maps official checkpoint sha256 → model name, so that the official weights of
    another zoo model are named as such in the error.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    names = {k: k for k in state} if set(state) <= set(own) else rename_keys(state, rules)

    targets: dict[str, list[str]] = {}
    for src, dst in names.items():
        targets.setdefault(dst, []).append(src)
    collisions = [f"{' and '.join(srcs)} → {dst}" for dst, srcs in targets.items() if len(srcs) > 1]
    unexpected = [src for src, dst in names.items() if dst not in own]
    loaded = {dst: state[src] for src, dst in names.items() if dst in own}
    missing = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    misshaped = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in loaded.items() if v.shape != own[k].shape
    ]
    if unexpected or missing or misshaped or collisions:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if misshaped:
            problems.append(f"{len(misshaped)} mis-shaped keys (checkpoint vs model): {_listing(misshaped)}")
        if collisions:
            problems.append(f"checkpoint keys renamed onto the same parameter: {_listing(collisions)}")
        hint = ""
        if known_checkpoints:
            other = known_checkpoints.get(sha256_file(path))
            if other and other != model_name:
                hint = f" — this file is the official checkpoint of {other!r}"
        raise CheckpointError(f"checkpoint {Path(path).name} does not fit {model_name}{hint}: " + "; ".join(problems))

    with torch.no_grad():
        for key, tensor in loaded.items():
            own[key].copy_(tensor)
