"""Structure-aware fuzzing of what users hand mobileseg: recipe YAML and artifact manifests with wrong
types, missing keys, huge and negative numbers and bytes that are not UTF-8. Whatever the input, the CLI
ends with 0, 1 or 2 (never 3, an internal error) and never shows a traceback; a 2 is one line."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import official_weights
from mobileseg.cli import app

runner = CliRunner()
RECIPE = yaml.safe_load((Path(__file__).resolve().parent.parent / "export_recipes" / "sinet.yaml").read_text())
WEIRD = st.sampled_from([
    None, True, False, -1, 0, 1.5, 10**12, -(10**12), 2**63, float("inf"), float("nan"), "", "x" * 300, "../..",
    [], {}, [1, 2, 3], [224], {"a": 1}, "sinet",
])  # fmt: skip
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


def _paths(node, prefix=()):
    """Every key path in a nested structure of dicts and lists."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


@st.composite
def mutated(draw, base: dict):
    """``base`` with one to three fields replaced by odd values or removed."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(document))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(WEIRD))  # a fresh copy: a later step may mutate it
    return document


def _check(result) -> None:
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 2:
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output


# ONNX only at 64×64 (fast: a valid recipe is a whole export); everything else as the real recipe has it
ONNX_RECIPE = {**RECIPE, "input": {**RECIPE["input"], "size": [64, 64]}, "targets": {"onnx": RECIPE["targets"]["onnx"]},
               "parity": {**RECIPE["parity"], "photos": ["astronaut"], "random": 1}}  # fmt: skip


@SETTINGS
@given(document=mutated(ONNX_RECIPE), raw=st.one_of(st.none(), st.binary(min_size=1, max_size=40)))
def test_any_recipe_ends_in_a_documented_exit_code(tmp_path, document, raw):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(raw if raw is not None else yaml.safe_dump(document).encode())
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    _check(runner.invoke(app, ["export", "sinet", "--recipe", str(path), "--random-weights", "--out", str(out)]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "sinet"
    result = runner.invoke(app, ["export", "sinet", "-t", "onnx", "--weights", str(official_weights("sinet")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text())


@SETTINGS
@given(data=st.data(), raw=st.one_of(st.none(), st.binary(min_size=1, max_size=40)))
def test_any_manifest_ends_in_a_documented_exit_code(tmp_path, exported, data, raw):
    source, manifest = exported
    folder = tmp_path / "artifact"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    document = data.draw(mutated(manifest))
    (folder / "manifest.json").write_bytes(raw if raw is not None else json.dumps(document).encode())
    _check(runner.invoke(app, ["verify", str(folder)]))


@pytest.mark.parametrize("key", ["input", "output", "tensors"])
def test_a_manifest_whose_io_part_is_not_an_object_is_a_user_mistake(tmp_path, exported, key):
    """Found by the manifest fuzz: ``io.input: null`` reached the parity loop and crashed (exit 3)."""
    source, manifest = exported
    folder = tmp_path / "artifact"
    shutil.copytree(source, folder)
    document = copy.deepcopy(manifest)
    document["artifacts"][0]["io"][key] = None
    (folder / "manifest.json").write_text(json.dumps(document))
    result = runner.invoke(app, ["verify", str(folder)])
    assert result.exit_code == 2 and f"io.{key}" in result.output, result.output
