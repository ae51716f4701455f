"""Online pseudo-labeling algorithms: the registry, the [algorithm] table, and each algorithm's own
rule on a classifier whose probabilities are a known function of the image brightness."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pseudolabel.algorithms import get_algorithm, is_online, list_algorithms, register_algorithm
from pseudolabel.algorithms.online import FixMatch, FlexMatch, FreeMatch, PseudoLabel
from pseudolabel.config import ConfigError, StudentRecipe, validate

SIZE = 4


def brightness_model():
    """P(class 0) = sigmoid((m - 128) / 16) of an image of mean brightness m; no BN, no dropout."""
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(keras.layers.GlobalAveragePooling2D()(inputs))
    dense.set_weights([np.tile([[1 / 96, -1 / 96]], (3, 1)).astype(np.float32), np.array([-4.0, 4.0], np.float32)])
    return keras.Model(inputs, outputs)


def images(p0):
    """Flat images the brightness model gives P(class 0) = p0."""
    p0 = np.asarray(p0, np.float64)
    m = 128 + 16 * np.log(p0 / (1 - p0))
    return np.broadcast_to(m[:, None, None, None], (len(p0), SIZE, SIZE, 3)).astype(np.float32)


def labeled(n=2):
    return images([0.9] * n), np.eye(2, dtype=np.float32)[[0] * n]


def wrap(cls, lr=0.0, **options):
    options = {"num_classes": 2, "n_unlabeled": 10, "threshold": 0.95, **options}
    model = cls(brightness_model(), **options)
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


def step(model, weak, strong, index=None):
    index = np.arange(len(weak)) if index is None else np.asarray(index)
    logs = model.train_step((labeled(), ((weak, strong), index)))
    return {k: float(v) for k, v in logs.items()}


def weights(model):
    return [w.numpy().copy() for w in model.student.trainable_variables]


# --------------------------------------------------------------------------- registry and config


def test_registry_names_classes_and_refuses_unknown_or_duplicate_names():
    from pseudolabel.noisy_student import NoisyStudent

    assert list_algorithms() == ["fixmatch", "flexmatch", "freematch", "noisy_student", "pseudo_label"]
    assert get_algorithm("fixmatch") is FixMatch and get_algorithm("noisy_student") is NoisyStudent
    assert not is_online("noisy_student") and all(is_online(n) for n in ("pseudo_label", "flexmatch", "freematch"))
    with pytest.raises(KeyError, match="unknown algorithm 'mixmatch'; known: fixmatch, flexmatch"):
        get_algorithm("mixmatch")
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("fixmatch", FixMatch)


def test_algorithm_is_one_line_or_a_table_validated_at_read_time(tmp_path):
    from pseudolabel.config import load_recipe

    assert StudentRecipe().algorithm.name == "noisy_student"
    assert "algorithm" not in StudentRecipe().model_dump(mode="json")   # recorded configs stay the same
    one_line = validate(StudentRecipe, {"algorithm": "flexmatch"}, source="r.toml")
    assert one_line.algorithm.name == "flexmatch" and one_line.algorithm.threshold == 0.95
    assert StudentRecipe.model_validate(one_line.model_dump(mode="json")) == one_line
    recipe = tmp_path / "r.toml"
    recipe.write_text('[algorithm]\nname = "fixmatch"\nthreshold = 0.8\nmu = 2.0\nema_decay = 0.99\n')
    loaded = load_recipe(recipe, "student", {"algorithm": {"warmup_steps": 5}})
    assert (loaded.algorithm.threshold, loaded.algorithm.mu, loaded.algorithm.warmup_steps) == (0.8, 2.0, 5)
    for values, message in [
        ({"algorithm": "mixmatch"}, "r.toml: algorithm.name: unknown algorithm 'mixmatch' (known: fixmatch, "
                                    "flexmatch, freematch, noisy_student, pseudo_label)"),
        ({"algorithm": {"name": "fixmatch", "threshold": 1.5}}, "r.toml: algorithm.threshold: should be less than"),
        ({"algorithm": {"name": "fixmatch", "ema_decay": 1.0}}, "r.toml: algorithm.ema_decay: should be less than 1"),
        ({"algorithm": {"name": "fixmatch", "mu": "2"}}, "r.toml: algorithm.mu: should be a valid number"),
        ({"algorithm": {"name": "fixmatch", "strong_augment": "nope"}}, "unknown augmentation 'nope'"),
        ({"algorithm": {"threshold": 0.5}}, "threshold: only for online algorithms, not 'noisy_student'"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(StudentRecipe, values, source="r.toml")


def test_set_overrides_the_algorithm_whichever_form_the_recipe_uses(tmp_path):
    import click
    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.cli.common import parse_overrides
    from pseudolabel.config import load_recipe

    one_line, table, noisy = tmp_path / "one.toml", tmp_path / "table.toml", tmp_path / "noisy.toml"
    one_line.write_text('algorithm = "fixmatch"\n[train]\nepochs = 2\n')
    table.write_text('[algorithm]\nname = "fixmatch"\nmu = 2.0\nema_decay = 0.99\n')
    noisy.write_text("[train]\nepochs = 2\n")

    def algorithm(path, *items):
        a = load_recipe(path, "student", parse_overrides(items)).algorithm
        return a.name, a.threshold, a.mu, a.ema_decay

    assert algorithm(one_line, "algorithm.threshold=0.9") == ("fixmatch", 0.9, 7.0, 0.0)
    assert algorithm(table, "algorithm.threshold=0.9") == ("fixmatch", 0.9, 2.0, 0.99)
    assert algorithm(one_line, "algorithm=flexmatch") == ("flexmatch", 0.95, 7.0, 0.0)
    assert algorithm(table, "algorithm=flexmatch") == ("flexmatch", 0.95, 2.0, 0.99)   # the table's settings kept
    assert algorithm(noisy, "algorithm=flexmatch") == ("flexmatch", 0.95, 7.0, 0.0)
    assert algorithm(noisy, "algorithm.name=freematch", "algorithm.threshold=0.9") == ("freematch", 0.9, 7.0, 0.0)
    assert algorithm(table, 'algorithm="flexmatch"', "train.epochs=1")[0] == "flexmatch"
    for path in (one_line, table):
        with pytest.raises(ConfigError) as error:
            load_recipe(path, "student", parse_overrides(["algorithm.treshold=0.9"]))
        line = str(error.value)
        assert line.startswith(f"{path} (with overrides): unknown key 'algorithm.treshold'") and "\n" not in line
    with pytest.raises(ConfigError, match="only for online algorithms, not 'noisy_student'"):
        load_recipe(table, "student", parse_overrides(["algorithm=noisy_student"]))   # its table is FixMatch's
    for items in (["algorithm=flexmatch", "algorithm.threshold=0.9"], ["algorithm.threshold=0.9", "algorithm=flexmatch"]):
        with pytest.raises(click.BadParameter, match="set to a value and used as a table"):
            parse_overrides(items)
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["student", "--recipe", str(one_line), "--out", str(out),
                                       "--set", "algorithm.treshold=0.9"])
    assert result.exit_code == 1 and "unknown key 'algorithm.treshold'" in result.output, result.output
    assert str(one_line) in result.output and "Traceback" not in result.output and not out.exists()


# --------------------------------------------------------------------------- the rules


def test_fixmatch_target_comes_from_the_weak_view():
    # Weak view: class 0 at 0.99; strong view: class 0 at only 0.2. The target is class 0.
    model = wrap(FixMatch)
    logs = step(model, images([0.99, 0.99]), images([0.2, 0.2]))
    assert logs["unlabeled_loss"] == pytest.approx(-math.log(0.2), rel=1e-4)   # not -log(0.8)
    assert logs["above_threshold"] == 1.0 and logs["above_threshold_0"] == 1.0 and logs["above_threshold_1"] == 0.0


def test_fixmatch_masked_positions_carry_no_loss_and_targets_no_gradient():
    updates, losses = [], []
    for strong_of_masked, weak_of_kept in ((0.01, 0.99), (0.99, 0.97)):
        model = wrap(FixMatch, lr=0.5)
        # Image 0 passes (weak 0.99 or 0.97 >= 0.95); image 1 does not (weak 0.6), whatever its strong view.
        logs = step(model, images([weak_of_kept, 0.6]), images([0.3, strong_of_masked]))
        updates.append(weights(model))
        losses.append(logs["unlabeled_loss"])
        assert logs["above_threshold"] == 0.5
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) == pytest.approx(-math.log(0.3) / 2, rel=1e-4)
    for a, b in zip(*updates):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(updates[0][0], brightness_model().get_weights()[0])   # it did train


def test_pseudo_label_uses_the_models_own_hard_labels_above_the_threshold():
    model = wrap(PseudoLabel, threshold=0.7)
    # Its own view: image 0 -> class 1 at 0.9 (kept), image 1 -> class 0 at 0.6 (below 0.7). No strong view.
    first = step(model, images([0.1, 0.6]), images([0.99, 0.01]))
    assert first["unlabeled_loss"] == pytest.approx(-math.log(0.9) / 2, rel=1e-4)
    assert first["above_threshold_1"] == 0.5 and first["above_threshold_0"] == 0.0
    other = step(wrap(PseudoLabel, threshold=0.7), images([0.1, 0.6]), images([0.5, 0.5]))
    assert other["unlabeled_loss"] == pytest.approx(first["unlabeled_loss"], rel=1e-6)
    assert list(model.epoch_labels.numpy()[:3]) == [1, -1, -1]


def test_flexmatch_thresholds_follow_the_learning_effect_with_warmup_and_the_convex_map():
    model = wrap(FlexMatch, threshold=0.9)
    np.testing.assert_allclose(model.thresholds().numpy(), [0.0, 0.0])   # no image confident yet
    # 3 of 10 pool images confidently class 0, 1 confidently class 1, 6 never: beta = [3, 1] / 6.
    logs = step(model, images([0.99, 0.99, 0.99, 0.02]), images([0.5] * 4), index=[0, 1, 2, 3])
    beta = np.array([3, 1]) / 6
    expected = 0.9 * beta / (2 - beta)
    np.testing.assert_allclose(model.thresholds().numpy(), expected, rtol=1e-5)
    assert logs["threshold_0"] == pytest.approx(expected[0], rel=1e-5)
    # Another step: image 3 turns class 0, image 4 joins class 0; an unconfident image changes nothing.
    step(model, images([0.95, 0.97, 0.5]), images([0.5] * 3), index=[3, 4, 5])
    beta = np.array([5, 0]) / 5   # 5 class 0, 0 class 1, 5 unused
    np.testing.assert_allclose(model.thresholds().numpy(), 0.9 * beta / (2 - beta), rtol=1e-5)
    # Without the warm-up the largest class normalises alone.
    plain = wrap(FlexMatch, threshold=0.9, threshold_warmup=False)
    step(plain, images([0.99, 0.99, 0.99, 0.02]), images([0.5] * 4), index=[0, 1, 2, 3])
    beta = np.array([3, 1]) / 3
    np.testing.assert_allclose(plain.thresholds().numpy(), 0.9 * beta / (2 - beta), rtol=1e-5)


def test_flexmatch_masks_with_the_thresholds_after_they_moved():
    model = wrap(FlexMatch, threshold=0.9)
    # beta = [2, 0] / 8 -> class 0 threshold 0.9 * 0.25 / 1.75 = 0.129, class 1's 0: all pass.
    logs = step(model, images([0.99, 0.99]), images([0.5, 0.5]), index=[0, 1])
    assert logs["above_threshold"] == 1.0


def test_freematch_thresholds_are_the_ema_of_confidence_times_the_normalised_class_probabilities():
    model = wrap(FreeMatch, threshold_momentum=0.5)
    np.testing.assert_allclose(model.thresholds().numpy(), [0.5, 0.5])   # 1/K, 1/K
    logs = step(model, images([0.9, 0.7]), images([0.5, 0.5]))
    tau = 0.5 * 0.5 + 0.5 * 0.8            # mean confidence 0.8
    local = 0.5 * 0.5 + 0.5 * np.array([0.8, 0.2])
    np.testing.assert_allclose(model.thresholds().numpy(), tau * local / local.max(), rtol=1e-5)
    assert logs["above_threshold"] == 1.0   # 0.9 and 0.7 >= 0.65
    logs = step(model, images([0.62, 0.99]), images([0.5, 0.5]))
    tau = 0.5 * tau + 0.5 * np.mean([0.62, 0.99])
    local = 0.5 * local + 0.5 * np.array([np.mean([0.62, 0.99]), np.mean([0.38, 0.01])])
    np.testing.assert_allclose(model.thresholds().numpy(), tau * local / local.max(), rtol=1e-5)
    assert logs["threshold_1"] == pytest.approx(float(tau * local[1] / local.max()), rel=1e-5)


def test_freematch_fairness_loss_is_lowest_for_a_balanced_masked_batch_and_ignores_unmasked_images():
    from pseudolabel.algorithms.online import fairness_loss

    uniform = tf.constant([0.5, 0.5])

    def loss(p0, mask=None, class_probs=uniform, label_hist=uniform):
        p = tf.constant(np.stack([p0, 1 - np.asarray(p0)], axis=1), tf.float32)
        mask = tf.ones(len(p0)) if mask is None else tf.constant(mask, tf.float32)
        return float(fairness_loss(p, mask, class_probs, label_hist))

    balanced, collapsed = loss([0.9, 0.8, 0.1, 0.2]), loss([0.9, 0.8, 0.7, 0.95])
    assert balanced == pytest.approx(math.log(2), rel=1e-5)   # the target's own entropy: its minimum
    assert balanced < loss([0.9, 0.8, 0.7, 0.2]) < collapsed   # the more collapsed, the higher
    assert loss([0.9, 0.8, 0.1, 0.2, 0.99, 0.97], mask=[1, 1, 1, 1, 0, 0]) == pytest.approx(balanced)
    assert loss([0.9, 0.2], mask=[0, 0]) == 0.0
    # The target is the EMAs' class_probs / label_hist, renormalised: a batch matching it is lowest.
    target = dict(class_probs=tf.constant([0.6, 0.4]), label_hist=tf.constant([0.5, 0.5]))
    assert loss([0.9, 0.8, 0.3, 0.2], **target) < loss([0.9, 0.8, 0.1, 0.2], **target)


def test_freematch_fairness_gradient_pulls_the_normalised_batch_towards_the_target_not_away():
    from pseudolabel.algorithms.online import fairness_loss

    logits = tf.Variable([[2.0, 0.0], [1.5, 0.0], [1.0, 0.0], [0.0, 1.0]])   # 3 of 4 say class 0
    uniform = tf.constant([0.5, 0.5])

    def batch():   # the masked mean prediction with each class's share of the hard labels divided out
        q = tf.reduce_mean(tf.nn.softmax(logits), axis=0).numpy() / np.array([0.75, 0.25])
        return q / q.sum()

    before = batch()
    with tf.GradientTape() as tape:
        value = fairness_loss(tf.nn.softmax(logits), tf.ones(4), uniform, uniform)
    logits.assign_sub(0.5 * tape.gradient(value, logits))
    assert abs(batch()[0] - 0.5) < abs(before[0] - 0.5)   # the paper's printed sign (-H) would push it away
    assert float(fairness_loss(tf.nn.softmax(logits), tf.ones(4), uniform, uniform)) < float(value)


def test_freematch_fairness_weight_adds_its_term_and_zero_keeps_todays_losses_and_state():
    weak, strong = images([0.9, 0.97, 0.2]), images([0.6, 0.8, 0.4])
    plain, zero = wrap(FreeMatch, threshold_momentum=0.5), wrap(FreeMatch, threshold_momentum=0.5, fairness_weight=0.0)
    assert [w.name for w in zero.weights] == [w.name for w in plain.weights]   # backups load as before
    logs_plain, logs_zero = step(plain, weak, strong), step(zero, weak, strong)
    assert logs_zero == logs_plain and "fairness_loss" not in logs_zero
    assert logs_zero["loss"] == pytest.approx(logs_zero["labeled_loss"] + logs_zero["unlabeled_loss"], rel=1e-6)
    fair = wrap(FreeMatch, threshold_momentum=0.5, fairness_weight=0.5)
    logs = step(fair, weak, strong)
    assert logs["fairness_loss"] > 0 and logs["unlabeled_loss"] == pytest.approx(logs_plain["unlabeled_loss"])
    assert logs["loss"] == pytest.approx(logs["labeled_loss"] + logs["unlabeled_loss"] + 0.5 * logs["fairness_loss"],
                                         rel=1e-6)
    # label_hist: the EMA of the weak views' hard-label histogram (2 of 3 say class 0), from 1/K
    np.testing.assert_allclose(fair.label_hist.numpy(), 0.5 * 0.5 + 0.5 * np.array([2 / 3, 1 / 3]), rtol=1e-6)
    with pytest.raises(ConfigError, match="fairness_weight: FreeMatch's fairness loss, not for 'fixmatch'"):
        validate(StudentRecipe, {"algorithm": {"name": "fixmatch", "fairness_weight": 0.01}}, source="r.toml")
    assert validate(StudentRecipe, {"algorithm": {"name": "freematch", "fairness_weight": 0.01}},
                    source="r.toml").algorithm.fairness_weight == 0.01


def test_unlabeled_weight_ramps_linearly_over_the_warmup():
    model = wrap(FixMatch, warmup_steps=4)
    ramps = []
    for _ in range(6):
        ramps.append(float(model.unlabeled_ramp()))
        logs = step(model, images([0.99]), images([0.3]))
        if not ramps[:-1]:
            assert logs["loss"] == pytest.approx(logs["labeled_loss"])   # step 0: no unlabeled loss at all
    assert ramps == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert float(wrap(FixMatch).unlabeled_ramp()) == 1.0


def test_ema_weights_are_what_evaluation_uses_and_what_is_kept():
    model = wrap(FixMatch, lr=0.5, ema_decay=0.5)
    start = weights(model)
    step(model, images([0.99, 0.6]), images([0.3, 0.3]))
    after_one = weights(model)
    for e, s, w in zip(model.ema_weights, start, after_one):
        np.testing.assert_allclose(e.numpy(), 0.5 * s + 0.5 * w, rtol=1e-6)
    step(model, images([0.99, 0.6]), images([0.3, 0.3]))
    raw, ema = weights(model), [e.numpy().copy() for e in model.ema_weights]
    x, y = images([0.9, 0.2, 0.7]), np.eye(2, dtype=np.float32)[[0, 1, 1]]
    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]

    def ce(ws):
        net = brightness_model()
        net.set_weights(ws)
        return float(keras.losses.categorical_crossentropy(y, net(x)).numpy().mean())

    assert loss == pytest.approx(ce(ema), rel=1e-5) and loss != pytest.approx(ce(raw), rel=1e-3)
    for a, b in zip(weights(model), raw):   # evaluation swapped the EMA back out
        np.testing.assert_array_equal(a, b)
    assert model.use_ema_weights() and all(np.array_equal(a, b) for a, b in zip(weights(model), ema))
    assert not wrap(FixMatch).use_ema_weights()   # no EMA: the weights are the trained ones
