"""Tests for pseudolabel.evaluation: AUC, bootstrap CIs, paired comparisons, TTA, plots, CSV I/O."""

import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pseudolabel import evaluation as ev


def binary_predictions(n=100, separation=1.0, seed=0, positive_rate=0.4):
    """Labels and [N,2] softmax-like probabilities whose P(1) separates the classes by `separation`."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(int)
    y[:2] = [0, 1]  # both classes always present
    logit = separation * (2 * y - 1) + rng.normal(0, 1, n)
    p1 = 1 / (1 + np.exp(-logit))
    return y, np.stack([1 - p1, p1], axis=1)


def multiclass_predictions(n=120, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


# --------------------------------------------------------------------------- AUC


def test_binary_auc_matches_sklearn_for_matrix_and_vector():
    y, probs = binary_predictions()
    expected = roc_auc_score(y, probs[:, 1])
    assert ev.roc_auc(y, probs) == pytest.approx(expected)
    assert ev.roc_auc(y, probs[:, 1]) == pytest.approx(expected)


def test_binary_auc_positive_index_selects_the_class():
    y, probs = binary_predictions()
    assert ev.roc_auc(y, probs, positive_index=0) == pytest.approx(roc_auc_score(y == 0, probs[:, 0]))


def test_multiclass_auc_is_macro_one_vs_rest():
    y, probs = multiclass_predictions()
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert ev.roc_auc(y, probs) == pytest.approx(expected)


def test_auc_with_one_class_is_a_clear_error():
    with pytest.raises(ev.EvaluationError, match="only class 1"):
        ev.roc_auc(np.ones(5, int), np.full((5, 2), 0.5))


def test_multiclass_auc_with_missing_class_is_an_error():
    y, probs = multiclass_predictions()
    with pytest.raises(ev.EvaluationError, match="no test examples"):
        ev.roc_auc(y[y != 2], probs[y != 2])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ev.EvaluationError, match="prediction rows"):
        ev.roc_auc([0, 1, 1], np.full((2, 2), 0.5))


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    scores = rng.integers(0, 5, (7, 60)).astype(float)  # many ties
    expected = [roc_auc_score(y, row) for row in scores]
    np.testing.assert_allclose(ev.rank_auc(y == 1, scores), expected)


def test_rank_auc_is_nan_without_both_classes():
    assert np.isnan(ev.rank_auc(np.ones(4, bool), np.arange(4.0))[0])


# --------------------------------------------------------------------------- bootstrap


def test_stratified_resamples_keep_the_class_of_every_position():
    y = np.array([0] * 3 + [1] * 97)
    idx = ev.resample_indices(y, 500, seed=1)
    assert idx.shape == (500, 100)
    assert np.all(y[idx] == y)  # so every resample has both classes, with the original counts


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    widths = []
    for n in (60, 600):
        y, probs = binary_predictions(n=n)
        lo, hi = ev.bootstrap_ci(y, probs)
        assert lo <= ev.roc_auc(y, probs) <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]


def test_bootstrap_ci_is_seeded():
    y, probs = binary_predictions()
    assert ev.bootstrap_ci(y, probs, seed=4) == ev.bootstrap_ci(y, probs, seed=4)
    assert ev.bootstrap_ci(y, probs, seed=4) != ev.bootstrap_ci(y, probs, seed=5)


def test_vectorized_bootstrap_equals_per_resample_sklearn():
    y, probs = binary_predictions(n=40)
    fast = ev.bootstrap_distribution(y, probs, ev.roc_auc, n_resamples=50, seed=2)
    slow = ev.bootstrap_distribution(y, probs, lambda yy, pp: roc_auc_score(yy, pp[:, 1]), n_resamples=50, seed=2)
    np.testing.assert_allclose(fast, slow)


def test_vectorized_multiclass_bootstrap_equals_sklearn():
    y, probs = multiclass_predictions(n=45)
    fast = ev.bootstrap_distribution(y, probs, ev.roc_auc, n_resamples=20, seed=2)
    slow = ev.bootstrap_distribution(
        y, probs, lambda yy, pp: roc_auc_score(yy, pp, multi_class="ovr"), n_resamples=20, seed=2)
    np.testing.assert_allclose(fast, slow)


def test_unstratified_bootstrap_skips_resamples_without_both_classes():
    y = np.array([0] * 18 + [1] * 2)
    probs = np.linspace(0, 1, 20)
    samples = ev.bootstrap_distribution(y, probs, n_resamples=300, stratified=False)
    assert np.isnan(samples).any()  # some resamples miss the 2 positives ...
    lo, hi = ev.percentile_interval(samples)  # ... and are left out of the interval
    assert 0 <= lo <= hi <= 1


def test_bootstrap_of_100_images_is_fast():
    y, probs = binary_predictions(n=100)
    start = time.perf_counter()
    ev.bootstrap_ci(y, probs, n_resamples=2000)
    other = np.clip(probs + np.random.default_rng(1).normal(0, 0.1, probs.shape), 0, 1)
    ev.paired_auc_difference(y, probs, other, n_resamples=2000)
    assert time.perf_counter() - start < 1.5


# --------------------------------------------------------------------------- evaluate_predictions


def test_evaluate_predictions_report_is_complete_and_json_ready():
    import json

    y, probs = binary_predictions(n=80)
    report = ev.evaluate_predictions(y, probs, ["O", "M"], n_resamples=200)
    json.dumps(report)  # JSON-ready
    assert report["n"] == 80
    assert sum(report["class_counts"].values()) == 80
    assert report["positive_class"] == "M"
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert report["roc_auc_ci"][0] <= report["roc_auc"] <= report["roc_auc_ci"][1]
    assert report["accuracy_ci"][0] <= report["accuracy"] <= report["accuracy_ci"][1]
    assert np.sum(report["confusion_matrix"]["matrix"]) == 80
    assert report["confusion_matrix"]["labels"] == ["O", "M"]
    assert set(report["per_class"]) >= {"O", "M", "macro avg"}
    assert report["threshold"] == "argmax"
    assert report["log_loss"] > 0


def test_evaluate_predictions_multiclass():
    y, probs = multiclass_predictions()
    report = ev.evaluate_predictions(y, probs, ["a", "b", "c"], n_resamples=100)
    assert report["positive_class"] is None
    assert report["roc_auc_average"] == "macro one-vs-rest"


# --------------------------------------------------------------------------- DeLong and paired differences


def brute_force_delong(y, scores_a, scores_b):
    """DeLong et al. (1988) with explicit O(m n) kernels, for checking the fast algorithm."""
    pos, neg = y == 1, y == 0

    def components(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    auc_a, v10_a, v01_a = components(scores_a)
    auc_b, v10_b, v01_b = components(scores_b)
    s10 = np.cov(np.stack([v10_a, v10_b]))
    s01 = np.cov(np.stack([v01_a, v01_b]))
    cov = s10 / pos.sum() + s01 / neg.sum()
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (auc_b - auc_a) / math.sqrt(var)
    return auc_b - auc_a, math.erfc(abs(z) / math.sqrt(2))


def test_delong_matches_brute_force_definition():
    y, probs_a = binary_predictions(n=70, separation=0.6, seed=1)
    rng = np.random.default_rng(9)
    probs_b = np.clip(probs_a + rng.normal(0, 0.15, probs_a.shape), 0, 1).round(2)  # ties included
    result = ev.delong_test(y, probs_a, probs_b)
    diff, p = brute_force_delong(y, probs_a[:, 1], probs_b[:, 1])
    assert result["diff"] == pytest.approx(diff)
    assert result["p_value"] == pytest.approx(p)


def test_delong_hand_worked_example():
    # Positives score 0.9, 0.8; negatives 0.3, 0.85. Model a ranks 3 of 4 pairs right, b all 4.
    y = np.array([1, 1, 0, 0])
    a = np.array([0.9, 0.8, 0.3, 0.85])
    b = np.array([0.9, 0.8, 0.3, 0.1])
    aucs, _ = ev.delong_auc_covariance(np.stack([a[:2], b[:2]]), np.stack([a[2:], b[2:]]))
    np.testing.assert_allclose(aucs, [0.75, 1.0])
    assert ev.delong_test(y, a, b)["diff"] == pytest.approx(0.25)


def test_identical_predictions_give_zero_difference_and_p_one():
    y, probs = binary_predictions()
    result = ev.paired_auc_difference(y, probs, probs, n_resamples=300)
    assert result["diff"] == 0
    assert result["ci_low"] == result["ci_high"] == 0
    assert result["p_value"] == 1.0


def test_clearly_better_model_gets_a_small_p_value():
    y, weak = binary_predictions(n=200, separation=0.2, seed=1)
    _, strong = binary_predictions(n=200, separation=3.0, seed=1)
    result = ev.paired_auc_difference(y, weak, strong, n_resamples=500)
    assert result["diff"] > 0.3
    assert result["ci_low"] > 0
    assert result["p_value"] < 1e-6


def test_delong_agrees_with_paired_bootstrap():
    y, probs_a = binary_predictions(n=300, separation=0.8, seed=2)
    rng = np.random.default_rng(5)
    probs_b = np.clip(probs_a + rng.normal(0, 0.2, probs_a.shape) * (probs_a - 0.5), 0, 1)
    result = ev.paired_auc_difference(y, probs_a, probs_b, n_resamples=2000)
    assert result["delong_se"] == pytest.approx(result["bootstrap_se"], rel=0.25)
    assert result["ci_low"] <= result["diff"] <= result["ci_high"]
    inside = result["ci_low"] < 0 < result["ci_high"]
    assert inside == (result["p_value"] > 0.05) or abs(result["p_value"] - 0.05) < 0.02


def test_paired_difference_sign_is_b_minus_a():
    y, weak = binary_predictions(n=100, separation=0.3, seed=1)
    _, strong = binary_predictions(n=100, separation=2.0, seed=1)
    forward = ev.paired_auc_difference(y, weak, strong, n_resamples=200)
    backward = ev.paired_auc_difference(y, strong, weak, n_resamples=200)
    assert forward["diff"] == pytest.approx(-backward["diff"])
    assert forward["delong_z"] == pytest.approx(-backward["delong_z"])
    assert forward["p_value"] == pytest.approx(backward["p_value"])


def test_paired_difference_multiclass_gets_a_permutation_p_value():
    y, probs = multiclass_predictions()
    rng = np.random.default_rng(5)
    noisy = probs + rng.uniform(0, 2.0, probs.shape)   # a much weaker model of the same images
    result = ev.paired_auc_difference(y, noisy, probs, n_resamples=500)
    assert result["test"].startswith("paired permutation") and result["delong_z"] is None
    assert result["diff"] > 0 and result["ci_low"] > 0 and result["p_value"] < 0.01
    same = ev.paired_auc_difference(y, probs, probs.copy(), n_resamples=200)
    assert same["diff"] == 0 and same["p_value"] == 1.0


def test_permutation_p_value_is_calibrated_under_the_null_and_agrees_with_delong():
    """Two equally good, independent models: p < 0.05 about 5% of the time; on a binary task the
    permutation p-value is close to DeLong's."""
    rng = np.random.default_rng(0)
    rejections = []
    for trial in range(150):
        y = np.arange(60) % 3
        a, b = (np.eye(3)[y] + rng.normal(0, 0.8, (60, 3)) for _ in range(2))
        rejections.append(ev.paired_permutation_test(y, a, b, n_permutations=199, seed=trial)["p_value"] < 0.05)
    assert 0.0 < np.mean(rejections) < 0.12
    y, weak = binary_predictions(n=120, separation=0.8, seed=3)
    _, strong = binary_predictions(n=120, separation=1.4, seed=4)
    delong = ev.paired_auc_difference(y, weak, strong, n_resamples=200)["p_value"]
    permuted = ev.paired_permutation_test(y, weak, strong, n_permutations=2000)["p_value"]
    assert abs(permuted - delong) < 0.05


# --------------------------------------------------------------------------- TTA


def tiny_images(batch=2, size=8):
    return np.arange(batch * size * size * 3, dtype=np.float32).reshape(batch, size, size, 3)


def test_tta_view_counts_and_shapes():
    images = tiny_images()
    assert len(ev.tta_views(images, "none")) == 1
    assert len(ev.tta_views(images, "flip")) == 2
    views = ev.tta_views(images, "ten_crop")
    assert len(views) == 10
    assert all(tuple(v.shape) == (2, 8, 8, 3) for v in views)
    assert all(tuple(v.shape) == (2, 5, 5, 3) for v in ev.tta_views(images, "ten_crop", size=5))


def test_flip_view_is_the_mirrored_image():
    images = tiny_images()
    original, flipped = (v.numpy() for v in ev.tta_views(images, "flip"))
    np.testing.assert_array_equal(original, images)
    np.testing.assert_array_equal(flipped, images[:, :, ::-1, :])


def test_ten_crop_views_are_corners_centre_and_their_flips():
    images = tiny_images()
    views = [v.numpy() for v in ev.tta_views(images, "ten_crop", size=4, crop_fraction=0.5)]
    expected = [images[:, :4, :4], images[:, :4, 4:], images[:, 4:, :4], images[:, 4:, 4:], images[:, 2:6, 2:6]]
    for view, crop in zip(views[:5], expected):
        np.testing.assert_array_equal(view, crop)
    for view, crop in zip(views[5:], expected):
        np.testing.assert_array_equal(view, crop[:, :, ::-1])


def test_unknown_tta_mode_is_refused():
    with pytest.raises(ValueError, match="unknown TTA mode"):
        ev.tta_views(tiny_images(), "rotate")


def left_right_model(size=8):
    """Softmax over (mean of the left half, mean of the right half): a flip swaps the classes."""
    import keras

    inputs = keras.Input((size, size, 3))
    halves = keras.layers.Lambda(lambda x: keras.ops.stack(
        [keras.ops.mean(x[:, :, : size // 2], axis=(1, 2, 3)),
         keras.ops.mean(x[:, :, size // 2:], axis=(1, 2, 3))], axis=1) / 50.0)(inputs)
    return keras.Model(inputs, keras.layers.Softmax()(halves))


def test_predict_with_and_without_tta():
    import tensorflow as tf

    model = left_right_model()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    images[:, :, :4] *= 0.3  # the right half is brighter: class 1 without TTA
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(5))).batch(2)

    plain = ev.predict(model, dataset)
    np.testing.assert_allclose(plain, model.predict(images, verbose=0), rtol=1e-5)
    assert np.all(plain[:, 1] > 0.5)
    # flip swaps the halves: softmax(a,b) + softmax(b,a) averages to exactly (1/2, 1/2)
    np.testing.assert_allclose(ev.predict(model, dataset, tta="flip"), 0.5, atol=1e-6)
    ten = ev.predict(model, images, tta="ten_crop", batch_size=3)
    expected = np.mean([model.predict(v, verbose=0) for v in ev.tta_views(images, "ten_crop")], axis=0)
    np.testing.assert_allclose(ten, expected, rtol=1e-5)


def test_predict_resizes_views_to_the_model_input():
    model = left_right_model(size=8)
    images = np.ones((3, 16, 16, 3), np.float32)
    assert ev.predict(model, images, tta="flip").shape == (3, 2)


# --------------------------------------------------------------------------- plots and CSV


def assert_png_written_atomically(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_plot_roc_writes_a_png(tmp_path):
    y, weak = binary_predictions(seed=1, separation=0.3)
    _, strong = binary_predictions(seed=1, separation=2.0)
    path = ev.plot_roc({"teacher": (y, weak), "student": (y, strong)}, tmp_path / "roc.png", n_resamples=100)
    assert_png_written_atomically(path)


def test_plot_roc_multiclass(tmp_path):
    y, probs = multiclass_predictions()
    assert_png_written_atomically(ev.plot_roc({"m": (y, probs)}, tmp_path / "roc.png", n_resamples=50))


def test_plot_history_from_csvlogger_file(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,accuracy,auc,learning_rate,loss,val_accuracy,val_auc,val_loss\n"
        "0,0.6,0.65,0.001,0.7,0.55,0.6,0.72\n"
        "1,0.7,0.75,0.001,0.6,0.6,0.7,0.66\n"
        "0,0.75,0.8,0.0001,0.5,0.62,0.72,0.64\n"  # a second phase appended
    )
    assert ev.plots._history_panels(ev.read_history(history))[0] == "loss"
    assert_png_written_atomically(ev.plot_history(history, tmp_path / "plots" / "history.png"))


def test_failed_plot_leaves_no_file(tmp_path):
    with pytest.raises(ev.EvaluationError):
        ev.plot_roc({"bad": (np.zeros(4, int), np.full(4, 0.5))}, tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []


def test_predictions_csv_round_trip(tmp_path):
    y, probs = binary_predictions(n=10)
    images = [f"Labeled/img_{i}.jpg" for i in range(10)]
    path = ev.write_predictions(tmp_path / "test_predictions.csv", images, y, probs.astype(np.float32), ["O", "M"])
    assert path.read_text().splitlines()[0] == "image,label,p_O,p_M"
    loaded = ev.read_predictions(path)
    assert loaded.images == images
    assert loaded.class_names == ["O", "M"]
    np.testing.assert_array_equal(loaded.y_true, y)
    np.testing.assert_array_equal(loaded.probs, probs.astype(np.float32))  # exact for float32
    assert [p.name for p in tmp_path.iterdir()] == ["test_predictions.csv"]


def test_read_predictions_refuses_other_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ev.EvaluationError, match="expected header"):
        ev.read_predictions(path)
