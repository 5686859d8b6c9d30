"""ONNX → TFLite with onnx2tf, then quantisation with the TFLite converter.

onnx2tf turns the simplified ONNX graph into a Keras model, transposing the graph to NHWC. Every
precision (fp32, fp16 weights, dynamic-range, int8) is converted here from that model's traced function
with the TFLite converter (not by onnx2tf, which would first serialise the model to SavedModels, nor by
its ``-oiqt``), so calibration uses real pictures and int8 I/O is a plain option.

onnx2tf needs handling that this module does for the user:

* offline, it tries to download a sample-image file for any 3-channel input. In its strict mode it runs
  that picture through ONNX and TensorFlow to choose between candidate transposes (its "accuracy
  compensation"), so a real photo in the model's input format is put in its working directory under that
  file name;
* that strict mode is two thirds of its time on the zoo (c3net's fp32 TFLite stage: 18 s → 10 s) and
  changes none of the zoo's files' outputs at their recipe sizes, so it is off at first; the Keras model is
  then checked against onnxruntime on the same picture and converted again in strict mode if it is more
  than `ONNX2TF_CHECK_LIMIT` off (the manifest's ``onnx2tf_check`` says which conversion made the file);
* it rewrites the input ``.onnx`` in place: it converts a copy;
* it runs ``onnxsim`` as a subprocess found on ``PATH``: the interpreter's ``bin`` folder is put first.

Output layouts are read from the written files, not assumed: onnx2tf leaves some outputs NCHW.

onnx2tf also decides which axis is the channel axis from the tensor shapes. Where a channel count equals a
spatial size (c3net at 512×1024 has [1, 128, 64, 128]), it can apply a per-channel op along the width:
that TFLite file ran but disagreed with ONNX everywhere (max rel 6, argmax agreement 0.02). For such
graphs the caller passes the same network exported with symbolic height and width: no spatial size is
known during conversion, so none can be mistaken for the channel count, and the traced function is
frozen to the static input shape afterwards. `ambiguous_tensors` tells when. onnx2tf cannot convert every
symbolic graph (SINet's channel shuffle fails at every size), and strict mode sometimes picks the right
axis in the static one (SINet at 96×96), so each conversion is checked against ONNX on the sample picture
and the next one tried until one agrees (`_checked_keras_model`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mobileseg.errors import ExportError, MissingDependencyError
from mobileseg.quantize.bias import correct_biases
from mobileseg.export.options import TfliteOptions
from mobileseg.quantize.tflite_fallback import tflite_interpreter, read_model, with_float_fallback, write_model
from mobileseg.outputs import scratch
from mobileseg.quiet import captured_output
from mobileseg.runtimes import get_runtime
from mobileseg.runtimes.tflite import bind_tensors, layout_of, to_model_layout, to_nchw

# Float fallback (quantize/tflite_fallback.py), per precision: the label agreement with the fp32 file to
# reach on the calibration pictures (half the disagreement the recipes allow against PyTorch on photos),
# the local error above which an op gets float weights at once, and op types always kept float:
# tflite-runtime 2.14 cannot load a dynamic-range (hybrid) TRANSPOSE_CONV.
FALLBACK_GOALS = {"fp16": (0.995, 0.01, ()), "dynamic": (0.985, 0.1, ("TRANSPOSE_CONV",))}
FALLBACK_SAMPLES = 2
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf runs first without its strict mode; a Keras model further than this from ONNX on the sample
# picture (max abs difference / ONNX's peak) is converted again in strict mode.
ONNX2TF_CHECK_LIMIT = 1e-3


def ambiguous_tensors(onnx_path: Path) -> list[str]:
    """Names of the 4-D tensors whose channel count equals their height or width (see the module notes)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path), load_external_data=False))
    names = []
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim]
        if len(dims) == 4 and all(dims) and dims[1] > 1 and dims[1] in dims[2:]:
            names.append(value.name)
    return names


@contextlib.contextmanager
def _onnx2tf_environment(workdir: Path, sample_nhwc: np.ndarray) -> Iterator[None]:
    """onnx2tf's working directory (with the sample picture it would download) and ``onnxsim`` on PATH."""
    np.save(workdir / ONNX2TF_SAMPLE, sample_nhwc.astype(np.float32))
    previous_cwd, previous_path = os.getcwd(), os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), previous_path])
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(previous_cwd)
        os.environ["PATH"] = previous_path


def _require_onnx2tf(log_path: Path) -> None:
    """Import onnx2tf now (TensorFlow's import-time log lines go to ``log_path``), or say how to install it."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with captured_output(log_path):
            import onnx2tf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("the tflite target", "onnx2tf", "tflite") from exc


def _failure(model_name: str, stage: str, exc: BaseException, log_path: Path) -> ExportError:
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    ops = re.findall(r"onnx_op_type:\s*(\w+)", log)
    names = re.findall(r"onnx_op_name:\s*(\S+)", log)
    where = f" at ONNX op {ops[-1]}" + (f" ({names[-1]})" if names else "") if ops else ""
    return ExportError(f"cannot convert {model_name} to tflite ({stage}){where}: {_first_line(exc)}")


def export_tflite(
    onnx_path: Path,
    folder: Path,
    options: TfliteOptions,
    calibration: np.ndarray,
    input_format: str,
    expected_output: tuple[int, ...],
    model_name: str,
    symbolic_onnx: Path | Callable[[], Path] | None = None,
    symbolic_first: bool = True,
    pseudo_operators: tuple[str, ...] = (),
) -> list[dict]:
    """Convert the exported ONNX file into one ``model_<precision>.tflite`` per precision in ``folder``.

    ``calibration`` is NCHW in the model's input format (used for int8, and its first pictures as onnx2tf's
    sample); ``expected_output`` is the NCHW logits shape, used to tell the layout of each written output.
    ``symbolic_onnx`` is the same network with symbolic height and width (or a function that exports it
    when first needed); it is converted before ``onnx_path`` when ``symbolic_first`` (see the module notes),
    else only when onnx2tf cannot convert the static graph (C3Net at 8×8, ExtremeC3Net at 4×4).
    ``pseudo_operators`` are ONNX op types onnx2tf writes in elementary ops (its ``replace_to_pseudo_operators``:
    "PReLU" for the 16×8 mode, which has no PRELU kernel).
    """
    options.validate(input_format)
    batch, (height, width) = expected_output[0], calibration.shape[2:]
    picture = np.resize(calibration, (batch, *calibration.shape[1:]))  # NCHW; onnx2tf's sample file is NHWC
    sample = picture.transpose(0, 2, 3, 1)
    channels = calibration.shape[1]
    static_shape = (batch, channels, height, width) if options.keep_nchw else (batch, height, width, channels)
    with scratch("onnx2tf-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "convert.log"
        _require_onnx2tf(log_path)
        expected = _onnx_output(onnx_path, picture)
        graphs = [("static", onnx_path)]
        if symbolic_onnx is not None:
            graphs.insert(0 if symbolic_first else 1, ("symbolic", symbolic_onnx))
        keras_model, function, shapes, check, note = _checked_keras_model(
            graphs, workdir, sample, picture, expected, options, log_path, static_shape, model_name, pseudo_operators,
        )  # fmt: skip
        entries, float_file = [], None
        samples = calibration[:FALLBACK_SAMPLES] if options.keep_nchw else calibration[:FALLBACK_SAMPLES].transpose(0, 2, 3, 1)
        for precision in options.precisions:
            target = folder / f"model_{precision}.tflite"
            fallback = None
            try:
                with captured_output(log_path):
                    data, details = _convert(function, keras_model, precision, calibration, options)
                    float_file = data if precision == "fp32" else float_file
                    if options.float_fallback and precision in FALLBACK_GOALS:
                        float_file = float_file or _convert(function, keras_model, "fp32")[0]
                        goal, local_limit, forced = FALLBACK_GOALS[precision]
                        data, fallback = with_float_fallback(data, float_file, samples, expected_output, goal, local_limit, forced)
            except Exception as exc:
                raise _failure(model_name, f"{precision} conversion", exc, log_path) from exc
            target.write_bytes(data)
            entry = _describe(target, precision, options, input_format, expected_output, calibration.shape[1])
            entry.update(details)
            if fallback is not None:
                entry["float_fallback"] = fallback.to_dict()
            entry["onnx2tf_shapes"] = shapes
            entry["onnx2tf_check"] = check
            if note:
                entry["note"] = note
            entries.append(entry)
    return entries


def _checked_keras_model(
    graphs: list[tuple[str, Path | Callable[[], Path]]], workdir: Path, sample: np.ndarray, picture: np.ndarray,
    expected: np.ndarray, options: TfliteOptions, log_path: Path, static_shape: tuple[int, ...], model_name: str,
    pseudo_operators: tuple[str, ...] = (),
):
    """onnx2tf's Keras model, traced to ``static_shape`` and checked against ONNX's ``expected`` output on the
    sample ``picture``: ``(keras_model, function, shapes, check, note)``.

    ``graphs`` are ``("symbolic" | "static", ONNX file or a function that writes it)``. Every graph is
    converted in their order without onnx2tf's strict mode, then with it, until one is within
    `ONNX2TF_CHECK_LIMIT`. A graph whose conversion fails (onnx2tf cannot convert SINet's channel shuffle
    with symbolic height and width; C3Net at 8×8 as a static graph) or cannot be traced to the static shape
    is dropped; when none meets the limit, the closest is kept and the note says so (parity then reports
    it). ``shapes`` is "symbolic" or "static"; ``check["attempts"]`` lists every conversion tried with its
    error on the picture, or why it failed.
    """
    sources = dict(graphs)
    attempts: list[dict] = []
    best, last_exc, failed = None, None, set()
    for strict in (False, True):
        for shapes, _ in graphs:
            if shapes in failed or (best is not None and best[3] <= ONNX2TF_CHECK_LIMIT):
                continue
            attempt = {"shapes": shapes, "strict_mode": strict}
            attempts.append(attempt)
            try:
                if callable(sources[shapes]):
                    sources[shapes] = sources[shapes]()
                keras_model = _onnx2tf(
                    sources[shapes], workdir / f"{shapes}-{'strict' if strict else 'fast'}", sample, options, log_path,
                    static_shape if shapes == "symbolic" else None, strict, pseudo_operators,
                )  # fmt: skip
                with captured_output(log_path):
                    function = _concrete_function(keras_model, {"image": static_shape})
                    error = _max_rel(function, picture if options.keep_nchw else sample, expected)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 (onnx2tf calls sys.exit on some errors)
                attempt["failed"], last_exc = _first_line(exc, limit=200), exc
                failed.add(shapes)
                continue
            attempt["sample_max_rel"] = float(f"{error:.3g}")
            if best is None or error < best[3]:
                best = (keras_model, function, attempt, error)
    if best is None:
        raise _failure(model_name, "onnx2tf", last_exc, log_path) from last_exc
    keras_model, function, chosen, error = best
    notes = [
        f"onnx2tf could not convert with {a['shapes']} height/width ({a['failed']}); converted the {chosen['shapes']} graph"
        for a in attempts if "failed" in a and a["shapes"] != chosen["shapes"] and not a["strict_mode"]
    ]  # fmt: skip
    if error > ONNX2TF_CHECK_LIMIT:
        notes.append(f"onnx2tf's model differs from ONNX on the sample picture (max rel {error:.3g}), strict mode too")
    check = {"strict_mode": chosen["strict_mode"], "sample_max_rel": chosen["sample_max_rel"], "attempts": attempts}
    return keras_model, function, chosen["shapes"], check, "; ".join(notes) or None


def _onnx_output(onnx_path: Path, image: np.ndarray) -> np.ndarray:
    """The ONNX graph's (NCHW) output on the NCHW ``image``, by the onnxruntime runner."""
    session = get_runtime("onnxruntime").load(onnx_path)
    return next(iter(session.run({session.input_names[0]: image}).values()))


def _max_rel(function, image: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference of the traced Keras ``function`` on ``image`` (in its input layout) from the NCHW
    ``expected``, relative to the largest magnitude of ``expected``; inf if the shapes do not match."""
    import tensorflow as tf

    produced = function(tf.constant(image, function.inputs[0].dtype))
    produced = np.asarray((produced[0] if isinstance(produced, (list, tuple)) else produced).numpy())
    try:
        produced = to_nchw(produced, layout_of(produced.shape, expected.shape))
    except ExportError:
        return float("inf")
    peak = float(np.abs(expected).max()) or 1.0
    return float(np.abs(produced - expected).max()) / peak


def _first_line(exc: BaseException, limit: int | None = None) -> str:
    """The line of ``exc``'s message that says what went wrong. TensorFlow's tracing errors start with "in
    user code:" and a stack; what failed is the line after the last ``...Error: Exception encountered``."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0] == "in user code:":
        errors = [i for i, line in enumerate(lines) if re.match(r"\w+Error: ", line)]
        if errors:
            i = errors[-1]
            lines[0] = lines[i + 1] if "Exception encountered" in lines[i] and i + 1 < len(lines) else lines[i]
            lines[0] = re.sub(r" for '\{\{node .*", "", lines[0])  # node names change with the process's state
    return lines[0] if limit is None or len(lines[0]) <= limit else lines[0][: limit - 1] + "…"


def _onnx2tf(
    onnx_path: Path, workdir: Path, sample: np.ndarray, options: TfliteOptions, log_path: Path,
    static_shape: tuple[int, ...] | None = None, strict: bool = True, pseudo_operators: tuple[str, ...] = (),
):
    """Run onnx2tf on a copy of ``onnx_path`` in ``workdir``; returns the Keras model it builds.

    ``static_shape`` (the model's input shape) is given for a graph with symbolic height and width: onnx2tf
    then uses it for its test inference only.
    """
    hints = None
    if static_shape is not None:
        b, *rest = static_shape
        nchw = static_shape if options.keep_nchw else (b, rest[2], rest[0], rest[1])
        hints = [f"image:{','.join(str(v) for v in nchw)}"]
    return _run_onnx2tf(onnx_path, workdir, sample, log_path, ["image"] if options.keep_nchw else None, hints, strict, pseudo_operators)


def _run_onnx2tf(
    onnx_path: Path, workdir: Path, sample: np.ndarray, log_path: Path, keep_nchw: list[str] | None = None,
    hints: list[str] | None = None, strict: bool = True, pseudo_operators: tuple[str, ...] = (),
):
    """onnx2tf's in-memory Keras model of a copy of ``onnx_path``; ``strict`` runs its accuracy compensation
    (a test inference per op to choose among candidate transposes; off, the conversion is 2-6x faster).

    onnx2tf is asked to save nothing: its own outputs (a SavedModel, then fp32 and fp16 ``.tflite`` files
    through ``from_keras_model``, which serialises the model to a SavedModel once more per file) were
    two thirds of its profiled time; `_convert` converts from the model's traced function instead
    (c3net's TFLite stage, three precisions: 91 s → 73 s, with identical parity figures).
    """
    import onnx2tf

    workdir.mkdir()
    source = workdir / "model.onnx"
    shutil.copyfile(onnx_path, source)  # onnx2tf rewrites its input in place
    with _onnx2tf_environment(workdir, sample), captured_output(log_path):
        return onnx2tf.convert(
            input_onnx_file_path=str(source),
            output_folder_path=str(workdir / "saved_model"),
            output_signaturedefs=True,
            keep_ncw_or_nchw_or_ncdhw_input_names=keep_nchw,
            shape_hints=hints,
            disable_model_save=True,
            disable_strict_mode=not strict,
            non_verbose=True,
            verbosity="error",
            replace_to_pseudo_operators=list(pseudo_operators) or None,
        )


def _concrete_function(keras_model, shapes: dict[str, tuple[int, ...]] | None = None):
    """The Keras model as one traced TensorFlow function, inputs in the model's order and named as in
    ONNX; an input listed in ``shapes`` is traced with that static shape (a graph converted with symbolic
    height and width is frozen to the model's input size here)."""
    import tensorflow as tf

    shapes = shapes or {}
    names = [tensor.name.split(":")[0] for tensor in keras_model.inputs]
    signature = [
        tf.TensorSpec(shapes.get(name) or tensor.shape, tensor.dtype, name=name)
        for name, tensor in zip(names, keras_model.inputs)
    ]  # fmt: skip

    @tf.function(input_signature=signature)
    def serve(*inputs):
        return keras_model(list(inputs) if len(inputs) > 1 else inputs[0])

    return serve.get_concrete_function()


def _convert(
    function, keras_model, precision: str, calibration: np.ndarray | None = None, options: TfliteOptions | None = None
) -> tuple[bytes, dict]:
    """One ``.tflite`` file of ``function`` (from `_concrete_function`) at ``precision``, and what its
    manifest entry should add (int8: the bias correction's record)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    # Convert the frozen function directly: the default lowers it to a SavedModel on disk first, which
    # cost C3Net 28 s per precision (its TFLite stage: 115 s → 59 s, the same files and parity).
    converter.experimental_lower_to_saved_model = False
    if precision == "fp32":
        return converter.convert(), {}
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert(), {}
    # Per-tensor quantised dense layers: the per-channel FULLY_CONNECTED (op version 12) of TF >= 2.15
    # cannot be loaded by older interpreters such as tflite-runtime 2.14; the SE layers are tiny anyway.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001
    samples = calibration if options.keep_nchw else calibration.transpose(0, 2, 3, 1)
    if precision == "a16w8":
        return _a16w8(converter, samples), {}
    if precision != "int8":
        return converter.convert(), {}
    return _int8(converter, samples, options)


def _a16w8(converter, samples: np.ndarray) -> bytes:
    """TFLite's 16×8 mode: int16 activations (symmetric, per tensor, min/max on ``samples``), int8
    per-channel weights, int64 biases; float32 input and output around them. Every op must have a 16×8
    kernel (no float fallback): the caller has expressed PReLU in ops that do (quantize/a16w8.py)."""
    import tensorflow as tf

    def representative_dataset():
        for sample in samples:
            yield [np.ascontiguousarray(sample[None])]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter.convert()


def _int8(converter, samples: np.ndarray, options: TfliteOptions) -> tuple[bytes, dict]:
    """Full-integer quantisation: calibrate on ``samples`` (in the model's input layout), set the activation
    ranges, quantise, correct the convolutions' biases (`quantize.bias`, unless ``options.bias_correction`` is
    off); returns the file and ``{"bias_correction": record}``.

    The calibrated float model carries each tensor's observed min/max; quantising it as it is gives the
    converter's own result (``activation_ranges="minmax"``). With ``"mse"`` `_mse_ranges` replaces the
    ranges first.
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    def representative_dataset():
        for sample in samples:
            yield [np.ascontiguousarray(sample[None])]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # noqa: SLF001 (returns the float model with observed ranges)
    calibrated = converter.convert()
    if options.activation_ranges == "mse":
        calibrated = _mse_ranges(calibrated, samples)
    io_type = tf.int8 if options.int8_io else tf.float32
    quantized = mlir_quantize(
        calibrated, input_data_type=io_type, output_data_type=io_type,
        disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,  # noqa: SLF001
    )  # fmt: skip
    if not options.bias_correction:
        return quantized, {"bias_correction": None}
    corrected, record = correct_biases(quantized, calibrated, samples)
    return corrected, {"bias_correction": record}


def _mse_ranges(calibrated: bytes, samples: np.ndarray, per_sample: int = 4096, seed: int = 0) -> bytes:
    """Replace the observed min/max of every inner activation by the range with the least 8-bit
    quantisation error on a seeded subsample of its values (``per_sample`` per picture).

    A min/max range is set by a few extreme values (in SINet the upsampled features and the stage fusion
    reach 40–120 standard deviations), which leaves most values on a handful of int8 levels. Candidate
    ranges are the observed one shrunk at either or both ends. Values rarer than about one in
    ``per_sample × len(samples)`` seldom enter the subsample, so the fit is robust to them: it clips
    them (by 5–8× on SINet's worst tensors) where the full-data squared error would keep them.
    It helped on the plain graphs (SINet's worst photo 0.87 → 0.95); on the int8-rewritten ones it helps
    ExtremeC3Net and hurts SINet, and it moves with the subsample, so it is an option and min/max the
    default (README, int8).
    The model's input and output keep their observed ranges.
    """
    model = read_model(calibrated)
    graph = model.subgraphs[0]
    ranged = [
        index for index, tensor in enumerate(graph.tensors)
        if tensor.quantization is not None and tensor.quantization.min is not None and len(tensor.quantization.min) == 1
        and index not in graph.inputs and index not in graph.outputs
    ]  # fmt: skip
    interpreter = tflite_interpreter(calibrated, keep_all=True, delegates=True)
    (model_input,) = interpreter.get_input_details()
    values: dict[int, list[np.ndarray]] = {index: [] for index in ranged}
    for number, sample in enumerate(samples):
        interpreter.set_tensor(model_input["index"], np.ascontiguousarray(sample[None], dtype=np.float32))
        interpreter.invoke()
        for index in ranged:
            flat = interpreter.get_tensor(index).ravel()
            if flat.size > per_sample:
                # Seeded by the tensor's size, not its index: the converter numbers tensors differently
                # from one process state to the next, and the subsample must not depend on that.
                rng = np.random.default_rng((seed, number, flat.size))
                flat = flat[rng.choice(flat.size, per_sample, replace=False)]
            values[index].append(flat.astype(np.float32))
    del interpreter
    for index in ranged:
        quantization = graph.tensors[index].quantization
        low, high = _least_error_range(np.concatenate(values[index]), float(quantization.min[0]), float(quantization.max[0]))
        quantization.min = np.array([low], dtype=np.float32)
        quantization.max = np.array([high], dtype=np.float32)
    return write_model(model)


def _least_error_range(values: np.ndarray, low: float, high: float, steps: int = 32) -> tuple[float, float]:
    """The [low, high] range (the observed one, shrunk) with the least 8-bit asymmetric quantisation MSE."""
    low, high = min(low, 0.0), max(high, 0.0)
    shrink = np.linspace(1.0 / steps, 1.0, steps)
    candidates = np.concatenate([
        np.stack([low * shrink, high * shrink], 1),
        np.stack([np.full(steps, low), high * shrink], 1),
        np.stack([low * shrink, np.full(steps, high)], 1),
    ])  # fmt: skip
    scale = (candidates[:, 1] - candidates[:, 0]) / 255.0
    candidates, scale = candidates[scale > 0], scale[scale > 0]
    if not len(scale):
        return low, high
    zero = np.round(-candidates[:, :1] / scale[:, None])
    levels = np.clip(np.round(values[None, :] / scale[:, None]) + zero, 0, 255)
    error = np.mean(((levels - zero) * scale[:, None] - values[None, :]) ** 2, axis=1)
    lo, hi = candidates[int(np.argmin(error))]
    return float(lo), float(hi)


def _spatial(shape, options: TfliteOptions) -> tuple[int, int]:
    return (int(shape[2]), int(shape[3])) if options.keep_nchw else (int(shape[1]), int(shape[2]))


def _describe(
    path: Path, precision: str, options: TfliteOptions, input_format: str, expected_output: tuple[int, ...], channels: int = 3
) -> dict:
    """The manifest entry of a written file, with I/O shapes, dtypes and layouts read back from it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    ops = {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 (the public API has no op listing)
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {
        "target": "tflite", "precision": precision, "file": path.name, "converter": "onnx2tf",
        "io": {
            "input": {"name": "image", "tensor": inp["name"], "shape": [int(v) for v in inp["shape"]],
                      "dtype": np.dtype(inp["dtype"]).name,
                      "layout": layout_of(list(inp["shape"]), (expected_output[0], channels, *_spatial(inp["shape"], options))),
                      "format": input_format, "quantization": [float(v) for v in inp["quantization"]]},
            "output": {"name": "logits", "tensor": out["name"], "shape": [int(v) for v in out["shape"]],
                       "dtype": np.dtype(out["dtype"]).name, "layout": layout_of(list(out["shape"]), expected_output),
                       "quantization": [float(v) for v in out["quantization"]]},
        },
        "ops": dict(sorted(ops.items())),
        "options": options.to_dict(),
    }  # fmt: skip


# ---- graphs with several inputs and outputs (the VOS subgraphs) -------------------------------------------

GRAPH_PRECISIONS = ("fp32", "fp16")  # what onnx2tf writes itself; quantised state tensors are out of scope


def convert_graph(
    onnx_path: Path,
    files: dict[str, Path],
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    name: str,
) -> dict[str, dict]:
    """Convert a multi-input, multi-output ONNX graph with onnx2tf into ``files[precision]`` (fp32, fp16).

    ``inputs`` / ``outputs`` are real NCHW tensors and their reference values (PyTorch). onnx2tf moves the
    channel axis of 3-D and 4-D tensors last, but not always (a square ``[1, 64, 64]`` input is read as it
    is), and names outputs ``Identity_N``. So the I/O record is read from the written file with real tensors:
    each input's layout from its shape (by value where both layouts fit), each output's name and layout by
    the reference output it reproduces. Returns, per precision, that ``tensors`` record, which the TFLite
    runner follows.
    """
    bad = [p for p in files if p not in GRAPH_PRECISIONS]
    if bad:
        raise ExportError(f"{name}: tflite graphs are exported as {', '.join(GRAPH_PRECISIONS)}, not {', '.join(bad)}")
    with scratch("onnx2tf-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "convert.log"
        _require_onnx2tf(log_path)
        pictures = [to_model_layout(v, "channels_last") for v in inputs.values() if v.ndim == 4 and v.shape[1] == 3]
        sample = pictures[0] if pictures else np.zeros((1, 128, 128, 3), np.float32)
        try:
            keras_model = _run_onnx2tf(onnx_path, workdir / "convert", sample, log_path)
        except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit on some conversion errors
            raise _failure(name, "onnx2tf", exc, log_path) from exc
        records = {}
        with captured_output(log_path):
            function = _concrete_function(keras_model)
        for precision, target in files.items():
            try:
                with captured_output(log_path):
                    data, _ = _convert(function, keras_model, precision)
            except Exception as exc:
                raise _failure(name, f"{precision} conversion", exc, log_path) from exc
            target.write_bytes(data)
            records[precision] = bind_tensors(target, inputs, outputs, name)
    return records
