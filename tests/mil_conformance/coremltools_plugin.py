"""pytest plugin: coremltools' own MIL op tests, judged by the MIL reference executor instead of Core ML.

Loaded into a pytest run over ``coremltools/converters/mil/mil/ops/tests/iOS1*/test_*.py`` (see
`tests/test_mil_conformance.py`). coremltools' harness builds each test's one-op program, converts it
with ``ct.convert`` and hands the model, the inputs and the expected outputs to ``compare_backend``,
which off macOS compares nothing. This plugin replaces that hook and ``run_compare_builder`` so that
every case is checked twice by `mobileseg.runtimes.mil_reference`:

* ``package-fp16`` / ``package-fp32``: the converted, saved ``.mlpackage`` loaded back from disk (what
  mobileseg verifies), with coremltools' own tolerance rule (fp16: atol max(100·atol, 0.5), rtol
  max(100·rtol, 0.05));
* ``memory``: the unconverted in-memory program the test built, with the same tolerances.

Each check is appended as one JSON line to ``$MOBILESEG_MIL_CONFORMANCE_OUT``:
``{"test", "route", "outcome", "detail"}`` with outcome ``match`` | ``mismatch`` | ``refused`` (the
executor declined the program with `UnsupportedMilOpError`, a one-line reason naming the op) |
``unreadable`` (coremltools' own reader cannot load the package its converter wrote) | ``error``
(anything else: an unclear error, a defect) | ``skipped`` (an input kind the harness cannot
feed, e.g. images or states).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import traceback

import numpy as np

_OUT = os.environ.get("MOBILESEG_MIL_CONFORMANCE_OUT")


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]  # "<node id> (call)"


def _record(route: str, outcome: str, detail: str = "") -> None:
    if _OUT:
        line = {"test": _current_test(), "route": route, "outcome": outcome, "detail": detail[:400]}
        with open(_OUT, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def _numpy_dtype(var) -> np.dtype:
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(var.dtype))


def _feeds(function, values: dict) -> dict:
    """The test's input values cast to the program's input types (as Core ML's predict casts its float32
    arrays), keyed by the program's (possibly sanitised) input names."""
    from coremltools.converters.mil.mil.passes.defs.preprocess import NameSanitizer

    feeds = {}
    for name, var in function.inputs.items():
        candidates = [key for key in values if key == name or NameSanitizer._replace_invalid_char_with_underscore(key) == name]
        if not candidates:
            raise KeyError(f"no input value for {name}")
        value = values[candidates[0]]
        feeds[name] = np.asarray(value).astype(_numpy_dtype(var))
    return feeds


def _compare(outputs: dict, expected: dict, atol: float, rtol: float) -> None:
    from coremltools.converters.mil.mil.passes.defs.preprocess import NameSanitizer

    for name, want in expected.items():
        key = name if name in outputs else NameSanitizer._replace_invalid_char_with_underscore(name)
        got = np.asarray(outputs[key])
        want = np.asarray(want)
        if want.shape != got.shape and not (want.shape == () and got.shape == (1,)):
            raise AssertionError(f"output {name}: shape {got.shape}, expected {want.shape}")
        if got.dtype == bool or want.dtype == bool:
            got, want = got.astype(np.float64), want.astype(np.float64)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=atol, rtol=rtol)


def _run(route: str, prepare) -> BaseException | None:
    """One check: ``prepare()`` gives (executor program, feeds, expected outputs, atol, rtol); run,
    compare, record. Returns the failure to raise (None when it matched or was refused)."""
    from mobileseg.errors import ArtifactError
    from mobileseg.runtimes.mil_reference import UnsupportedMilOpError

    try:
        program, feeds, expected, atol, rtol = prepare()
        _compare(program.run(feeds), expected, atol, rtol)
    except UnsupportedMilOpError as exc:
        _record(route, "refused", str(exc))
        return None
    except ArtifactError as exc:  # coremltools' milproto reader fails on the package its converter wrote
        _record(route, "unreadable", str(exc))
        return exc
    except AssertionError as exc:
        _record(route, "mismatch", " ".join(str(exc).split()))
        return exc
    except Exception as exc:  # noqa: BLE001 - any other failure is the defect this suite looks for
        where = traceback.format_exc(limit=-1).splitlines()[-3:-1]
        _record(route, "error", f"{type(exc).__name__}: {exc} | {' '.join(' '.join(where).split())}")
        return exc
    _record(route, "match")
    return None


def _fp16_tolerance(atol: float, rtol: float) -> tuple[float, float]:
    """coremltools' rule for fp16 backends (``compare_backend``)."""
    return max(atol * 100.0, 5e-1), max(rtol * 100.0, 5e-2)


def _feedable(values) -> bool:
    return values is not None and all(isinstance(v, (np.ndarray, np.generic, int, float, bool)) for v in values.values())


def compare_backend(mlmodel, input_key_values, expected_outputs, dtype="fp32", atol=1e-04, rtol=1e-05,
                    also_compare_shapes=True, state=None, allow_mismatch_ratio=0.0):  # fmt: skip
    """coremltools' hook, judged by the executor on the saved package."""
    from mobileseg.runtimes.mil_reference import MilProgram

    route = f"package-{dtype}"
    if expected_outputs is None:
        return None
    if state is not None or not _feedable(input_key_values):
        _record(route, "skipped", "stateful model" if state is not None else "image input")
        return None
    if dtype == "fp16":
        atol, rtol = _fp16_tolerance(atol, rtol)

    def prepare():
        program = MilProgram.from_package(mlmodel.package_path)
        return program, _feeds(program.function, input_key_values), expected_outputs, atol, rtol

    failure = _run(route, prepare)
    if failure is not None:
        raise failure
    return None


def _fresh(placeholders: dict) -> dict:
    """Copies of the test's placeholders with new input variables: a second program built on the same
    variables would add its ops to the converted program's inputs."""
    fresh = {}
    for name, placeholder in placeholders.items():
        fresh[name] = copy.copy(placeholder)
        fresh[name]._infer_output_var()
    return fresh


def _in_memory_check(a) -> BaseException | None:
    """The test's program as built, before conversion, through the executor, judged as coremltools'
    harness judges the test's config: its atol / rtol, widened by the fp16 rule in fp16 configs."""
    from coremltools.converters.mil import mil
    from coremltools.converters.mil.mil import Function

    from mobileseg.runtimes.mil_reference import MilProgram

    opset = a["backend"].opset_version if a["backend"] is not None else None
    try:
        with Function(_fresh(a["input_placeholders"]), opset_version=opset) as function:
            outputs = a["build"](**function.inputs)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            function.set_outputs(outputs)
    except Exception:  # noqa: BLE001 - the builder rejects the program: what the test checks, nothing to run
        return None
    program = mil.Program()
    program.add_function("main", function)

    def prepare():
        expected = a["expected_outputs"] if isinstance(a["expected_outputs"], list) else [a["expected_outputs"]]
        executor = MilProgram(program)
        atol, rtol = a["atol"], a["rtol"]
        if a["backend"] is not None and a["backend"].precision == "fp16":
            atol, rtol = _fp16_tolerance(atol, rtol)
        expected = dict(zip([v.name for v in outputs], expected))
        return executor, _feeds(executor.function, a["input_values"]), expected, atol, rtol

    return _run("memory", prepare)


def _wrap_run_compare_builder(original):
    signature = inspect.signature(original)

    def run_compare_builder(*args, **kwargs):
        a = signature.bind(*args, **kwargs)
        a.apply_defaults()
        a = a.arguments
        failure = None
        if a["expected_outputs"] is not None and not a["frontend_only"] and a["pred_iters"] is None and _feedable(a["input_values"]):
            failure = _in_memory_check(a)
        result = original(*args, **kwargs)
        if failure is not None:
            raise failure
        return result

    return run_compare_builder


def pytest_configure(config) -> None:
    import coremltools.converters.mil.mil.ops.tests.testing_utils as op_testing
    import coremltools.converters.mil.testing_utils as testing

    op_testing.run_compare_builder = _wrap_run_compare_builder(op_testing.run_compare_builder)
    op_testing.compare_backend = compare_backend
    testing.compare_backend = compare_backend
