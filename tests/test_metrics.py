import math

import numpy as np
import pytest

from mobileseg.verify.metrics import check, compare, labels, mean_iou


def test_identical_outputs():
    ref = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    m = compare(ref, ref.copy(), "softmax_logits")
    assert m["max_abs"] == 0 and m["max_rel"] == 0 and math.isinf(m["psnr_db"])
    assert m["cosine"] == pytest.approx(1.0) and m["argmax_agreement"] == 1.0 and m["miou"] == 1.0


def test_known_values():
    ref = np.zeros((1, 2, 2, 2), np.float32)
    ref[0, 0] = [[4, 0], [0, 0]]
    ref[0, 1] = [[0, 2], [2, 2]]
    out = ref.copy()
    out[0, 0, 0, 0] = 3.0  # error 1 on one element
    out[0, 0, 1, 1] = 3.0  # flips one pixel's label from class 1 to class 0
    m = compare(ref, out, "softmax_logits")
    assert m["max_abs"] == 3.0 and m["max_rel"] == 0.75
    assert m["mean_abs"] == pytest.approx(4.0 / 8)
    assert m["psnr_db"] == pytest.approx(20 * math.log10(4) - 10 * math.log10((1 + 9) / 8))
    assert m["argmax_agreement"] == 0.75
    # labels ref [[0,1],[1,1]] vs out [[0,1],[1,0]]: class0 IoU 1/2, class1 IoU 2/3
    assert m["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_nan_output_fails_every_bound():
    ref = np.ones((1, 1, 4, 4), np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = np.nan
    m = compare(ref, out, "sigmoid_logit")
    assert check(m, {"max_rel": 1e-3, "min_cosine": 0.99, "min_argmax_agreement": 0.9})


def test_sigmoid_labels_and_miou():
    out = np.array([[[[1.0, -1.0], [0.5, -0.5]]]], np.float32)
    assert labels(out, "sigmoid_logit").tolist() == [[[1, 0], [1, 0]]]
    assert mean_iou(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx((0.5 + 0.5) / 2)


def test_check_reports_violations_only():
    m = {"max_rel": 2e-5, "cosine": 0.999999, "argmax_agreement": 1.0}
    assert check(m, {"max_rel": 5e-5, "min_cosine": 0.99999}) == []
    assert check(m, {"max_rel": 1e-5}) == ["max_rel 2.00e-05 > 1.00e-05"]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4, 3)))


def test_blocked_sums_match_whole_tensor_float64_and_reused_labels_change_nothing():
    # larger than one block of `_sums`, with a large common offset (where float32 sums would drift)
    rng = np.random.default_rng(1)
    ref = (100 + rng.normal(size=(1, 3, 300, 400))).astype(np.float32)
    out = (ref + rng.normal(scale=0.05, size=ref.shape)).astype(np.float32)
    m = compare(ref, out, "softmax_logits")
    r, o = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    d = np.abs(r - o)
    assert m["max_abs"] == pytest.approx(d.max(), rel=1e-12)
    assert m["mean_abs"] == pytest.approx(d.mean(), rel=1e-9)
    assert m["cosine"] == pytest.approx(r @ o / np.sqrt((r @ r) * (o @ o)), rel=1e-12)
    assert m["psnr_db"] == pytest.approx(20 * math.log10(np.abs(r).max()) - 10 * math.log10(np.mean(d**2)), rel=1e-9)
    assert compare(ref, out, "softmax_logits", labels(ref, "softmax_logits")) == m
