"""Reuse-gated VOS: blocks against independent references, the session's state machine and input checks,
exported subgraphs (real onnxruntime and the MIL reference) against PyTorch, subgraph by subgraph and
over whole sequences (teacher-forced and free-running)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mobileseg.cli import app
from mobileseg.vos.augment import FIRST_FRAME_WARPS, first_frame_set, warp_frame, warp_labels, warp_matrices
from mobileseg.vos.backends import TorchBackend
from mobileseg.vos.data import generate_sequence, iou
from mobileseg.vos.evaluate import sequence_parity
from mobileseg.vos.modules import PyrUpBicubic2d, StaticAdaptiveMaxPool2d, TargetModel
from mobileseg.vos.session import VOSInputError, VOSSession, aggregate
from mobileseg.vos.solver import neighbourhood
from mobileseg.vos.train import build_model, spearman

SIZE = (128, 224)
runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    return build_model(0, *SIZE)


@pytest.fixture(scope="module")
def sequence():
    return generate_sequence(7, *SIZE, length=10)


@pytest.mark.parametrize("height,width", [(60, 107), (16, 28), (32, 56), (4, 4), (9, 13)])
def test_static_adaptive_max_pool_is_bit_exact(height, width):
    x = torch.randn(2, 5, height, width)
    for size in (7, 3):
        assert torch.equal(StaticAdaptiveMaxPool2d(size)(x), torch.nn.AdaptiveMaxPool2d(size)(x))


def test_bicubic_upsampler_and_target_model_match_torch_ops():
    x = torch.randn(1, 6, 11, 17)
    up = PyrUpBicubic2d(6)(x)
    torch.testing.assert_close(up, F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False), atol=2e-6, rtol=0)
    f16, project, filt = torch.randn(1, 256, 5, 7), torch.randn(96, 256), torch.randn(1, 96 * 9)
    score, projected = TargetModel()(f16, project, filt)
    reference = F.conv2d(F.conv2d(f16, project[:, :, None, None]), filt.reshape(1, 96, 3, 3), padding=1)
    torch.testing.assert_close(score, reference, rtol=1e-4, atol=1e-3)
    # the host solver's neighbourhood order is the graph's: X · filterᵀ is the same score
    host = neighbourhood(projected.numpy()) @ filt.numpy()[0]
    np.testing.assert_allclose(host.reshape(5, 7), reference[0, 0].numpy(), rtol=1e-3, atol=1e-2)


def test_generated_sequences_are_deterministic_with_exact_masks():
    a, b = generate_sequence(3, *SIZE, length=12), generate_sequence(3, *SIZE, length=12)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.masks[0].any() and set(np.unique(a.masks)) <= {0, 1}
    still = [t for t in range(1, 12) if a.phases[t] == "still"]
    assert all(iou(a.masks[t], a.masks[t - 1]) == 1.0 for t in still)
    two = generate_sequence(4, *SIZE, length=4, objects=2)
    assert set(np.unique(two.masks[0])) == {0, 1, 2}


def test_first_frame_copies_keep_frame_and_mask_aligned(sequence):
    frame, labels = sequence.frames[0], sequence.masks[0]
    frames, maps = first_frame_set(frame, labels)
    assert len(frames) == len(maps) == 2 + FIRST_FRAME_WARPS
    assert np.array_equal(frames[0], frame) and np.array_equal(frames[1], frame[:, ::-1]) and np.array_equal(maps[1], labels[:, ::-1])
    assert np.array_equal(warp_frame(frame, np.eye(3)), frame) and np.array_equal(warp_labels(labels, np.eye(3)), labels)
    # a frame painted with its own labels warps like the label map (away from the bilinear seams, and where
    # the warp samples inside the image: the frame replicates its border, the mask counts outside as background)
    painted = np.repeat((labels * 200).astype(np.uint8)[:, :, None], 3, axis=2)
    for matrix, warped_labels in zip(warp_matrices(), maps[2:]):
        warped = warp_frame(painted, matrix)[:, :, 0]
        interior = ((warped == 0) | (warped == 200)) & (warp_labels(np.ones_like(labels), matrix) > 0)
        assert interior.mean() > 0.5
        assert np.array_equal(warped[interior] == 200, warped_labels[interior] > 0)
        assert 0 < (warped_labels > 0).sum() < labels.size


def test_soft_aggregation_and_spearman():
    p = np.array([[[0.9, 0.2, 0.6]], [[0.3, 0.1, 0.8]]], np.float32)
    assert aggregate(p).tolist() == [[1, 0, 2]]
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 50.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)


def test_session_state_machine_follows_tau_and_force(model, sequence):
    backend = TorchBackend(model, SIZE)
    never = VOSSession(backend, tau=1.0)
    never.start(sequence.frames[0], sequence.masks[0])
    for t in range(1, 4):
        _, info = never.step(sequence.frames[t])
        assert info.decision == {1: "full"} and "backbone_high" in info.latency_ms
    assert never.reuse_ratio() == 0.0
    always = VOSSession(backend, tau=0.0)
    always.start(sequence.frames[0], sequence.masks[0])
    score_before = always.objects[0].score_prev.copy()
    labels, info = always.step(sequence.frames[1])
    assert info.decision == {1: "reuse"} and "backbone_high" not in info.latency_ms and "refine_translator" in info.latency_ms
    assert np.array_equal(always.objects[0].score_prev, score_before)  # reuse writes no state
    assert labels.shape == SIZE and labels.dtype == np.uint8
    _, info = always.step(sequence.frames[2], force={1: "full"})
    assert info.decision == {1: "full"} and not np.array_equal(always.objects[0].score_prev, score_before)


@pytest.mark.parametrize("case,message", [
    ("tau", "τ must lie in [0, 1]"),
    ("frame_size", "but the model runs at 128x224"),
    ("mask_size", "the first mask is"),
    ("mask_values", "binary or a label map"),
    ("empty", "no foreground"),
])  # fmt: skip
def test_session_rejects_bad_input(model, sequence, case, message):
    backend = TorchBackend(model, SIZE)
    with pytest.raises(VOSInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        if case == "tau":
            VOSSession(backend, tau=1.5)
        session = VOSSession(backend)
        if case == "frame_size":
            session.start(sequence.frames[0][:64], sequence.masks[0][:64])
        if case == "mask_size":
            session.start(sequence.frames[0], sequence.masks[0][:64])
        if case == "mask_values":
            session.start(sequence.frames[0], sequence.masks[0] * 0.5)
        if case == "empty":
            session.start(sequence.frames[0], np.zeros(SIZE, np.uint8))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    from mobileseg.vos.export import VOSExportRequest, export_vos

    out = tmp_path_factory.mktemp("vos") / "artifact"
    manifest = export_vos(VOSExportRequest(model, out, ("onnx", "coreml"), SIZE, weights_record={"seed": 0}))
    return out, manifest


def test_export_writes_every_subgraph_and_a_state_machine(exported):
    out, manifest = exported
    assert manifest["parity"]["passed"], [r for r in manifest["parity"]["results"] if not r["passed"]]
    names = {(e["graph"], e["target"], e["precision"]) for e in manifest["artifacts"]}
    assert len(names) == 8 * 3  # onnx fp32 + coreml fp32/fp16
    assert all((out / e["file"]).exists() for e in manifest["artifacts"])
    assert manifest["gate"]["reuse_if"] == "p_reuse > tau (strict)"
    assert manifest["state"]["per object"]["score_prev"] == [1, 1, 8, 14]
    assert manifest["state"]["per object"]["f8_prev"] == [1, 128, 16, 28]
    gate_inputs = next(g["inputs"] for g in manifest["subgraphs"] if g["name"] == "matching")
    assert list(gate_inputs) == ["f8", "f8_prev", "score_prev", "template"]
    augmentation = manifest["first_frame_augmentation"]  # the warps an app needs to fit the target model alike
    np.testing.assert_allclose(augmentation["warps_output_to_input"], warp_matrices(), atol=1e-8)
    onnx_gate = next(e for e in manifest["artifacts"] if e["graph"] == "matching" and e["target"] == "onnx")
    assert "ReduceMax" in onnx_gate["ops"] and "MaxPool" not in onnx_gate["ops"]  # the static pool rewrite
    fp32 = [r for r in manifest["parity"]["results"] if r["precision"] == "fp32"]
    assert max(m["max_rel"] for r in fp32 for m in r["metrics"].values()) < 1e-4


@pytest.mark.parametrize("runtime,precision", [("onnxruntime", "fp32"), ("mil-reference", "fp32")])
def test_exported_session_follows_pytorch(model, exported, runtime, precision):
    from mobileseg.vos.api import open_backend

    out, _ = exported
    clip = generate_sequence(11, *SIZE, length=8, objects=2)
    result = sequence_parity(TorchBackend(model, SIZE), open_backend(out, runtime, precision), clip, tau=0.5, precision=precision)
    assert result["teacher_forced"]["passed"], result
    assert result["teacher_forced"]["min_mask_iou"] >= (0.99 if precision == "fp32" else 0.95)
    if precision == "fp32":
        assert result["free_running"]["decision_agreement"] == 1.0
        assert result["teacher_forced"]["max_p_reuse_diff"] < 1e-4


def test_cli_run_writes_masks_and_log(exported, tmp_path, sequence):
    import imageio.v3 as iio

    out, _ = exported
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(sequence.frames[:5]):
        iio.imwrite(frames / f"{t:03d}.png", frame)
    iio.imwrite(tmp_path / "mask.png", (sequence.masks[0] * 255).astype(np.uint8))
    result = runner.invoke(app, ["vos", "run", str(out), "--video", str(frames), "--mask", str(tmp_path / "mask.png"),
                                 "--tau", "0.7", "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["frames"] == 5 and len(log["per_frame"]) == 4
    assert {"p_reuse", "decision", "latency_ms"} <= set(log["per_frame"][0])
    assert len(list((tmp_path / "run" / "masks").glob("*.png"))) == 5
    args = ["vos", "run", str(out), "--video", str(frames), "--mask", str(tmp_path / "mask.png"), "--tau", "1.0"]
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])  # a run folder of mobileseg's is replaced
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run" / "log.json").read_text())["tau"] == 1.0
    refused = runner.invoke(app, [*args, "--out", str(frames)])  # the user's frames are not
    assert refused.exit_code == 2 and "is not a mobileseg artifact folder" in refused.output
    assert sorted(p.name for p in frames.iterdir()) == [f"{t:03d}.png" for t in range(5)]


def test_cli_bad_input_is_one_line_exit_2(exported, tmp_path, sequence):
    import imageio.v3 as iio

    out, _ = exported
    frames = tmp_path / "frames"
    frames.mkdir()
    iio.imwrite(frames / "000.png", sequence.frames[0])
    iio.imwrite(frames / "001.png", sequence.frames[1][:100])
    good = tmp_path / "good"
    good.mkdir()
    for t in range(2):
        iio.imwrite(good / f"{t:03d}.png", sequence.frames[t])
    iio.imwrite(tmp_path / "mask.png", (sequence.masks[0] * 255).astype(np.uint8))
    grey = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) % 200).astype(np.uint8)
    iio.imwrite(tmp_path / "grey.png", grey)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((out / "manifest.json").read_text())
    cases = [
        (["vos", "run", str(out), "--video", str(frames), "--mask", str(tmp_path / "mask.png")], "all frames must have one size"),
        (["vos", "run", str(out), "--video", str(good), "--mask", str(tmp_path / "grey.png")], "not binary"),
        (["vos", "run", str(out), "--video", str(good), "--mask", str(tmp_path / "mask.png"), "--tau", "2"], "τ must lie"),
        (["vos", "run", str(broken), "--video", str(good), "--mask", str(tmp_path / "mask.png")], "is missing"),
        (["vos", "bench", str(out), "--taus", "0.5,x"], "comma-separated"),
        (["vos", "export", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")], "VOS weights not found"),
        (["vos", "export", "--target", "tensorrt", "--out", str(tmp_path / "z"), "--weights", str(out / "torch/weights.pt")],
         "unknown target(s) tensorrt"),
        (["vos", "export", "--input-size", "100x200", "--out", str(tmp_path / "y"), "--weights", str(out / "torch/weights.pt")],
         "multiples of 32"),
        (["vos", "train-gate", "--backbone-steps", "-1", "--out", str(tmp_path / "w.pt")], "step counts must be 0 or more"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "w.pt").exists()  # a refused training writes no weights


def test_gate_training_is_reproducible_from_the_seed_and_learns(tmp_path):
    from mobileseg.vos.train import TrainConfig, load_weights, save_weights, train_gate

    config = TrainConfig(sequences=2, gate_sequences=6, heldout=1, length=8, backbone_steps=40, segmentation_steps=4, gate_steps=150)
    first, report = train_gate(config)
    second, _ = train_gate(config)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    backbone = report["phases"]["backbone"]
    assert backbone["steps"] == 40 and backbone["last_loss"] < backbone["first_loss"]
    untrained = build_model(0, config.height, config.width)  # pretraining moved the low stages, not the high ones
    assert not torch.equal(first.backbone_low.layer2[0].conv1.weight, untrained.backbone_low.layer2[0].conv1.weight)
    assert torch.equal(first.backbone_high.layer3[0].conv1.weight, untrained.backbone_high.layer3[0].conv1.weight)
    gate = report["phases"]["gate"]
    assert gate["last_loss"] < gate["first_loss"]
    held = report["heldout"]
    rho = held["spearman_p_reuse_vs_iou"]
    assert held["frames"] == 7 and (rho is None or -1.0 <= rho <= 1.0)
    save_weights(first, tmp_path / "w.pt", report)
    loaded, loaded_report = load_weights(tmp_path / "w.pt")
    assert loaded_report["config"]["seed"] == 0
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), first.state_dict().values()))


TFLITE_SIZE = (64, 96)


@pytest.fixture(scope="module")
def exported_tflite(tmp_path_factory):
    from mobileseg.vos.export import VOSExportRequest, export_vos

    small = build_model(0, *TFLITE_SIZE)
    out = tmp_path_factory.mktemp("vos-tflite") / "artifact"
    manifest = export_vos(VOSExportRequest(small, out, ("tflite",), TFLITE_SIZE, weights_record={"seed": 0}))
    return small, out, manifest


def test_tflite_export_maps_every_tensor_and_passes_parity(exported_tflite):
    _, out, manifest = exported_tflite
    assert manifest["parity"]["passed"], [r for r in manifest["parity"]["results"] if not r["passed"]]
    assert {(e["graph"], e["precision"]) for e in manifest["artifacts"]} == {
        (g, p) for g in ("backbone_low", "backbone_high", "template", "matching", "target_model", "refiner_coarse",
                         "refine_translator", "refiner_fine") for p in ("fp32", "fp16")}  # fmt: skip
    matching = next(e for e in manifest["artifacts"] if e["graph"] == "matching" and e["precision"] == "fp32")
    tensors = matching["io"]["tensors"]
    assert set(tensors["inputs"]) == {"f8", "f8_prev", "score_prev", "template"} and set(tensors["outputs"]) == {"p_reuse", "delta"}
    # onnx2tf reads the square [1, 64, 64] template as it is, but moves the channels of f8 last
    assert tensors["inputs"]["template"]["layout"] == "as_is" and tensors["inputs"]["f8"]["layout"] == "channels_last"
    assert tensors["inputs"]["f8_prev"]["layout"] == "channels_last"
    fp32 = [r for r in manifest["parity"]["results"] if r["precision"] == "fp32"]
    assert max(m["max_rel"] for r in fp32 for m in r["metrics"].values()) < 1e-4
    # the bicubic upsampler's replicate padding reaches TFLite as slices, not as chains of MIRROR_PAD
    from ai_edge_litert.interpreter import Interpreter

    fine = Interpreter(model_path=str(out / "tflite" / "refiner_fine_fp32.tflite"))
    ops = [op["op_name"] for op in fine._get_ops_details()]  # noqa: SLF001
    assert "MIRROR_PAD" not in ops


@pytest.mark.parametrize("runtime", ["litert", "tflite-runtime-noxnn"])
def test_tflite_session_follows_pytorch(exported_tflite, runtime):
    from mobileseg.runtimes import get_runtime
    from mobileseg.vos.api import open_backend

    if get_runtime(runtime).unavailable_reason():
        pytest.skip(get_runtime(runtime).unavailable_reason())
    small, out, _ = exported_tflite
    clip = generate_sequence(12, *TFLITE_SIZE, length=8, objects=2)
    result = sequence_parity(TorchBackend(small, TFLITE_SIZE), open_backend(out, runtime), clip, tau=0.5, precision="fp32")
    assert result["teacher_forced"]["passed"], result
    assert result["teacher_forced"]["min_mask_iou"] >= 0.99
    assert result["free_running"]["decision_agreement"] == 1.0


def test_change_cue_is_zero_without_change_and_scale_free():
    from mobileseg.vos.modules import ChangeCue

    f8, score = torch.rand(1, 128, 8, 14), torch.rand(1, 1, 4, 7)
    assert torch.equal(ChangeCue()(f8, f8, score), torch.zeros(1, 2, 8, 14))
    moved = torch.roll(f8, 2, dims=3)
    cue = ChangeCue()(moved, f8, score)
    torch.testing.assert_close(ChangeCue()(3 * moved, 3 * f8, score), cue)
    assert cue[:, 0].mean() > 0.1 and torch.all(cue[:, 1] <= cue[:, 0])


def test_gate_with_change_cue_ranks_held_out_change_and_the_papers_gate_does_not():
    """A 300-step gate training (no backbone pretraining) on 8 sequences, judged on 6 others with every
    frame computed: the change cue ranks the true IoU; the paper's inputs alone do not generalise."""
    from mobileseg.vos.train import TrainConfig, evaluate_gate, train_gate

    config = TrainConfig(backbone_steps=0, segmentation_steps=4, sequences=2, gate_sequences=8, gate_steps=300, heldout=6, length=16)
    with_cue, _ = train_gate(config)
    paper, _ = train_gate(dataclasses.replace(config, change_cue=False))
    rho_cue = evaluate_gate(with_cue, config, tau=1.0)["spearman_p_reuse_vs_iou"]
    rho_paper = evaluate_gate(paper, config, tau=1.0)["spearman_p_reuse_vs_iou"] or 0.0
    assert rho_cue >= 0.5 and rho_cue > rho_paper + 0.2, (rho_cue, rho_paper)


def test_weights_without_an_architecture_record_load_as_the_papers_gate(tmp_path, sequence):
    from mobileseg.vos.model import subgraphs
    from mobileseg.vos.train import load_weights

    paper = build_model(0, *SIZE, change_cue=False)
    torch.save({"format": "mobileseg-vos-weights/1", "state_dict": paper.state_dict(), "report": {}}, tmp_path / "old.pt")
    loaded, _ = load_weights(tmp_path / "old.pt")
    assert not loaded.change_cue
    matching = next(g for g in subgraphs(loaded, *SIZE) if g.name == "matching")
    assert matching.input_names == ["f8", "score_prev", "template"]
    session = VOSSession(TorchBackend(loaded, SIZE), tau=0.5)
    session.start(sequence.frames[0], sequence.masks[0])
    labels, info = session.step(sequence.frames[1])
    assert labels.shape == SIZE and 0.0 <= info.p_reuse[1] <= 1.0
