"""Online pseudo-labeling train steps: each a `keras.Model` wrapping the classifier, labeling the
unlabeled batch inside every step.

A training element is `((x_l, y_l[, w_l]), (views, index))`: a labeled batch (one-hot `y_l`), and
an unlabeled batch as a tuple of views (weak, strong; `PseudoLabel` uses the weak one only) with
each image's index in the pool (what FlexMatch's per-image memory and the statistics key on).
All images go through the model in ONE forward pass (labeled, weak, strong concatenated), so
batch-norm layers that train see them all, as in FixMatch's code. Per step:

    q        = sharpen(p(weak), temperature)            no gradient: the target is not trained
    label    = argmax q, confidence = max q
    mask     = confidence >= threshold[label]           each algorithm's own rule (`thresholds`)
    loss     = CE(labeled) + lambda_u * ramp * sum(mask * CE(one_hot(label), p(strong))) / n_u

`ramp` rises linearly from 0 to 1 over `warmup_steps` (1 at once with 0). The unlabeled loss is a
mean over the whole unlabeled batch, masked positions counting as zeros (FixMatch).

Rules: `PseudoLabel` (Lee 2013) a fixed threshold on the model's own prediction of the image it
trains on. `FixMatch` (Sohn et al. 2020) a fixed threshold on the weak view, training the strong
view. `FlexMatch` (Zhang et al. 2021) per-class thresholds threshold * M(beta_c), M(x) = x / (2 - x),
beta_c = sigma_c / max(max_c' sigma_c', n_unused) (warm-up; without it / max_c' sigma_c'), sigma_c
the pool images whose latest confident (>= threshold) prediction is c. `FreeMatch` (Wang et al.
2023) a global threshold tau (EMA of the mean confidence, from 1/K) times a local one,
p_c / max_c' p_c' with p the EMA of the mean probability vector (from 1/K); the EMA momentum is
`threshold_momentum`. With `fairness_weight` w_f > 0 FreeMatch adds its self-adaptive fairness
term, w_f x `fairness_loss` (below), to every step's loss (not ramped, as in the reference code).

Under a tf.distribute strategy every replica all-gathers the confidences, labels and indices of
the global unlabeled batch before updating the thresholds, so they move exactly as on one device,
and the losses are per-replica means scaled by `replica_share` (the global-batch mean's gradient);
FreeMatch's fairness term is computed on each replica's own batch, as the reference code does.
State variables (thresholds, memories, the EMA weights) are weights of the wrapper: checkpoints
and backups keep them, so a resumed run continues with them.

`ema_decay` > 0: an exponential moving average of the trainable weights, updated after every
step; `evaluate` (validation in `fit`) runs on it, and `use_ema_weights()` copies it into the
classifier for saving and evaluation once training is done.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from pseudolabel.distribute import replica_share

# Replicas write the same value (computed from all-gathered inputs): the first replica's is kept.
_SHARED = "only_first_replica"


class OnlineAlgorithm(keras.Model):
    """The shared step (module doc); subclasses say how thresholds move (`update_thresholds`) and
    what they are (`thresholds`). Save `.student`, not this wrapper."""

    num_views = 2   # weak and strong

    def __init__(self, student: keras.Model, *, num_classes: int, n_unlabeled: int, threshold: float = 0.95,
                 temperature: float = 1.0, lambda_u: float = 1.0, warmup_steps: int = 0, ema_decay: float = 0.0,
                 class_weight=None, class_names=None, **options):
        super().__init__(name=options.pop("name", None))
        self.student = student
        self.num_classes, self.n_unlabeled = int(num_classes), int(n_unlabeled)
        self.threshold, self.temperature = float(threshold), float(temperature)
        self.lambda_u, self.warmup_steps, self.ema_decay = float(lambda_u), int(warmup_steps), float(ema_decay)
        self.class_names = [str(c) for c in (class_names or range(self.num_classes))]
        self._class_weight = None if class_weight is None else tf.constant([float(w) for w in class_weight], tf.float32)
        self.steps = self._state("steps", (), "int64", 0)
        # The pseudo-label (-1: none) each pool image last got this epoch: `OnlineStatistics` reads it.
        self.epoch_labels = self._state("epoch_labels", (self.n_unlabeled,), "int32", -1)
        self.ema_weights = [self._state(f"ema_{i}", v.shape, v.dtype, v.numpy())
                            for i, v in enumerate(student.trainable_variables)] if self.ema_decay > 0 else []
        self.init_state(**options)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in
                         ("loss", "labeled_loss", "unlabeled_loss", "lambda_u", "above_threshold",
                          *self.auxiliary_loss_names())}
        self.class_trackers = [keras.metrics.Mean(name=f"above_threshold_{metric_name(c)}") for c in self.class_names]
        self.accuracy_tracker = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.built = student.built

    def init_state(self) -> None:
        """Create the algorithm's own state variables (`_state`); keyword options are its own."""

    def _state(self, name, shape, dtype, value):
        initial = np.broadcast_to(np.asarray(value, dtype=dtype), shape).copy()
        return self.add_weight(name=name, shape=shape, dtype=dtype, trainable=False, aggregation=_SHARED,
                               initializer=lambda shape, dtype=None: initial)

    @property
    def metrics(self):
        return [*self.trackers.values(), *self.class_trackers, self.accuracy_tracker]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # ------------------------------------------------------------------ the algorithm's rule

    def update_thresholds(self, confidence, label, probs, index) -> None:
        """Move the thresholds with the GLOBAL unlabeled batch (all replicas'), before masking."""

    def thresholds(self):
        """`[K]` confidence each pseudo-label class needs now."""
        return tf.fill([self.num_classes], tf.constant(self.threshold, tf.float32))

    def auxiliary_loss_names(self) -> tuple[str, ...]:
        """The algorithm's own loss terms (logged unweighted, as history.csv columns); none by default."""
        return ()

    def auxiliary_losses(self, p_train, label, mask) -> dict:
        """{name: (weight, value)} of the algorithm's own loss terms on the unlabeled batch."""
        return {}

    # ------------------------------------------------------------------ the step

    def unlabeled_ramp(self):
        if self.warmup_steps <= 0:
            return tf.constant(1.0)
        return tf.minimum(1.0, tf.cast(self.steps, tf.float32) / float(self.warmup_steps))

    def train_step(self, data):
        (x_l, y_l, w_l), (views, index) = unpack_online_batch(data)
        y_l = tf.cast(y_l, tf.float32)
        n_l, n_u = tf.shape(x_l)[0], tf.shape(views[0])[0]
        used = views[: self.num_views]
        with tf.GradientTape() as tape:
            probs = tf.cast(self.student(tf.concat([x_l, *used], axis=0), training=True), tf.float32)
            p_l, p_weak, p_train = probs[:n_l], probs[n_l:n_l + n_u], probs[n_l + (len(used) - 1) * n_u:]
            label, mask = self.pseudo_labels(p_weak, index)
            labeled_loss = cross_entropy(y_l, p_l, labeled_weights(y_l, w_l, self._class_weight))
            per_image = keras.losses.categorical_crossentropy(tf.one_hot(label, self.num_classes), p_train)
            unlabeled_loss = tf.reduce_sum(mask * per_image) / tf.cast(n_u, tf.float32)
            weight = self.lambda_u * self.unlabeled_ramp()
            loss = labeled_loss + weight * unlabeled_loss
            auxiliary = self.auxiliary_losses(p_train, label, mask)
            for term_weight, value in auxiliary.values():
                loss = loss + term_weight * value
            if self.student.losses:
                loss = loss + tf.add_n(self.student.losses)
            scaled_loss = self.optimizer.scale_loss(replica_share(loss))   # see NoisyStudent.train_step
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        self.update_ema()
        self.steps.assign_add(1)
        for name, value in (("loss", loss), ("labeled_loss", labeled_loss), ("unlabeled_loss", unlabeled_loss),
                            ("lambda_u", weight), *((n, v) for n, (_, v) in auxiliary.items())):
            self.trackers[name].update_state(value)
        self.trackers["above_threshold"].update_state(mask)
        for k, tracker in enumerate(self.class_trackers):
            tracker.update_state(mask * tf.cast(tf.equal(label, k), tf.float32))
        self.accuracy_tracker.update_state(y_l, p_l)
        logs = {m.name: m.result() for m in self.metrics}
        thresholds = self.thresholds()
        logs.update({f"threshold_{metric_name(c)}": thresholds[k] for k, c in enumerate(self.class_names)})
        return logs

    def pseudo_labels(self, p_weak, index):
        """(hard labels, float mask) of the unlabeled batch, after the thresholds moved; records
        the labels that pass in `epoch_labels`. No gradient flows into the targets."""
        q = tf.stop_gradient(sharpen(p_weak, self.temperature))
        confidence, label = tf.reduce_max(q, axis=-1), tf.argmax(q, axis=-1, output_type=tf.int32)
        index = tf.cast(index, tf.int32)
        everywhere = [gather_replicas(t) for t in (confidence, label, q, index)]
        self.update_thresholds(*everywhere)
        mask = tf.cast(confidence >= tf.gather(self.thresholds(), label), tf.float32)
        all_conf, all_label, _, all_index = everywhere
        passed = all_conf >= tf.gather(self.thresholds(), all_label)
        recorded = tf.where(passed, all_label, tf.fill(tf.shape(all_label), -1))
        self.epoch_labels.assign(tf.tensor_scatter_nd_update(self.epoch_labels, all_index[:, None], recorded))
        return label, mask

    def update_ema(self) -> None:
        d = self.ema_decay
        for shadow, variable in zip(self.ema_weights, self.student.trainable_variables):
            shadow.assign(d * shadow + (1.0 - d) * tf.cast(variable, shadow.dtype))

    # ------------------------------------------------------------------ evaluation and the EMA

    def test_step(self, data):
        x, y = data[0], tf.cast(data[1], tf.float32)
        probs = tf.cast(self.student(x, training=False), tf.float32)
        loss = cross_entropy(y, probs)
        self.trackers["loss"].update_state(loss)
        self.accuracy_tracker.update_state(y, probs)
        return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.student(x, training=False)

    def evaluate(self, *args, **kwargs):
        # Validation inside fit comes here too: with an EMA, it is the EMA weights that are judged.
        self.swap_ema()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.swap_ema()

    def swap_ema(self) -> None:
        """Exchange the classifier's trainable weights with their EMA (no-op without one)."""
        for shadow, variable in zip(self.ema_weights, self.student.trainable_variables):
            current = variable.numpy()
            variable.assign(shadow.numpy())
            shadow.assign(current)

    def use_ema_weights(self) -> bool:
        """Copy the EMA into the classifier, which is then what is saved and evaluated (False: no EMA)."""
        for shadow, variable in zip(self.ema_weights, self.student.trainable_variables):
            variable.assign(shadow.numpy())
        return bool(self.ema_weights)


class PseudoLabel(OnlineAlgorithm):
    """Pseudo-Label (Lee 2013): the model's own hard label of an image, above a fixed threshold,
    is that same image's target (one view: the weak one)."""

    num_views = 1


class FixMatch(OnlineAlgorithm):
    """FixMatch (Sohn et al. 2020): the weak view's hard label, above a fixed threshold, is the
    target of the strong view."""


class FlexMatch(OnlineAlgorithm):
    """FlexMatch (Zhang et al. 2021): curriculum pseudo-labeling, per-class thresholds (module doc)."""

    def init_state(self, threshold_warmup: bool = True) -> None:
        self.threshold_warmup = bool(threshold_warmup)
        self.selected_label = self._state("selected_label", (self.n_unlabeled,), "int32", -1)
        self.learning_effect = self._state("learning_effect", (self.num_classes,), "float32", 0.0)

    def update_thresholds(self, confidence, label, probs, index) -> None:
        confident = confidence >= self.threshold
        chosen = tf.boolean_mask(index, confident)[:, None]
        self.selected_label.assign(tf.tensor_scatter_nd_update(self.selected_label, chosen,
                                                               tf.boolean_mask(label, confident)))
        counts = tf.cast(tf.math.bincount(self.selected_label + 1, minlength=self.num_classes + 1,
                                          maxlength=self.num_classes + 1), tf.float32)
        unused, sigma = counts[0], counts[1:]
        denominator = tf.maximum(tf.reduce_max(sigma), unused) if self.threshold_warmup else tf.reduce_max(sigma)
        # As the reference code: unchanged while no image was ever confident (all unused).
        anything = unused < float(self.n_unlabeled)
        self.learning_effect.assign(tf.where(anything, sigma / tf.maximum(denominator, 1.0), self.learning_effect))

    def thresholds(self):
        beta = self.learning_effect
        return self.threshold * beta / (2.0 - beta)


class FreeMatch(OnlineAlgorithm):
    """FreeMatch (Wang et al. 2023): self-adaptive thresholds, global x local (module doc), and with
    `fairness_weight` > 0 its self-adaptive fairness loss (`fairness_loss`), whose target needs
    `label_hist`, the EMA (same momentum) of the histogram of the weak views' hard labels."""

    def init_state(self, threshold_momentum: float = 0.999, fairness_weight: float = 0.0) -> None:
        self.momentum, self.fairness_weight = float(threshold_momentum), float(fairness_weight)
        uniform = 1.0 / self.num_classes
        self.global_threshold = self._state("global_threshold", (), "float32", uniform)
        self.class_probs = self._state("class_probs", (self.num_classes,), "float32", uniform)
        # Only with the loss: without it the wrapper's weights (checkpoints, backups) stay as they were.
        self.label_hist = self._state("label_hist", (self.num_classes,), "float32", uniform) if self.fairness else None

    @property
    def fairness(self) -> bool:
        return self.fairness_weight > 0

    def update_thresholds(self, confidence, label, probs, index) -> None:
        m = self.momentum
        self.global_threshold.assign(m * self.global_threshold + (1.0 - m) * tf.reduce_mean(confidence))
        self.class_probs.assign(m * self.class_probs + (1.0 - m) * tf.reduce_mean(probs, axis=0))
        if self.fairness:
            self.label_hist.assign(m * self.label_hist + (1.0 - m) * class_histogram(label, self.num_classes))

    def auxiliary_loss_names(self) -> tuple[str, ...]:
        return ("fairness_loss",) if self.fairness else ()

    def auxiliary_losses(self, p_train, label, mask) -> dict:
        if not self.fairness:
            return {}
        return {"fairness_loss": (self.fairness_weight,
                                  fairness_loss(p_train, mask, self.class_probs, self.label_hist))}

    def thresholds(self):
        return self.global_threshold * self.class_probs / tf.reduce_max(self.class_probs)


# --------------------------------------------------------------------------- pieces


def fairness_loss(p_strong, mask, class_probs, label_hist):
    """FreeMatch's self-adaptive fairness term: the cross-entropy H(target, batch) of

        batch  = SumNorm(mean of p(strong) over the masked images / their hard-label histogram)
        target = SumNorm(class_probs / label_hist)     (the EMAs of the weak views; no gradient)

    so it is smallest (H(target)) when the masked strong views' mean prediction, with each class's
    share of the hard labels divided out, matches the target, and large when the batch collapses
    onto fewer classes than the target holds. Both are the paper's (Eq. 11, and the reference
    code's `entropy_loss`), but the paper writes L_f = -H(.,.), which minimised pushes the two
    apart (its sign as printed contradicts its aim; USB issue #182): this is the sign that pulls
    them together. Histogram divisions are constants (1/0 -> 0, a class no image chose counts 0),
    as in the reference code. 0 when no image is masked in."""
    k = p_strong.shape[-1]
    selected = tf.boolean_mask(p_strong, mask > 0)

    def loss():
        hist = class_histogram(tf.argmax(selected, axis=-1, output_type=tf.int32), k)
        batch = sum_norm(tf.reduce_mean(selected, axis=0) * tf.stop_gradient(tf.math.divide_no_nan(1.0, hist)))
        target = tf.stop_gradient(sum_norm(class_probs * tf.math.divide_no_nan(1.0, label_hist)))
        return -tf.reduce_sum(target * tf.math.log(batch + 1e-12))

    return tf.cond(tf.shape(selected)[0] > 0, loss, lambda: tf.constant(0.0, tf.float32))


def class_histogram(label, num_classes: int):
    """`[K]` share of each class among the hard labels `label`."""
    counts = tf.math.bincount(label, minlength=num_classes, maxlength=num_classes, dtype=tf.float32)
    return counts / tf.maximum(tf.reduce_sum(counts), 1.0)


def sum_norm(x):
    return x / tf.reduce_sum(x, axis=-1, keepdims=True)


def unpack_online_batch(data):
    """((x_l, y_l[, w_l]), (views[, index])) -> ((x_l, y_l, w_l or None), (views tuple, index))."""
    labeled, unlabeled = data
    x_l, y_l, *rest = labeled
    views, *index = unlabeled
    views = tuple(views) if isinstance(views, (tuple, list)) else (views,)
    index = index[0] if index else tf.range(tf.shape(views[0])[0], dtype=tf.int64)
    return (x_l, y_l, rest[0] if rest else None), (views, index)


def sharpen(probs, temperature: float):
    """p^(1/T), renormalised (= softmax(logits / T)); T = 1: p itself."""
    if temperature == 1.0:
        return probs
    powered = tf.pow(tf.maximum(probs, 1e-12), 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def gather_replicas(value):
    """`value` of every replica, concatenated (the global batch); itself on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_gather(value, axis=0)


def labeled_weights(y_l, w_l, class_weight):
    if w_l is None and class_weight is None:
        return None
    w = tf.ones_like(y_l[:, 0]) if w_l is None else tf.cast(w_l, tf.float32)
    if class_weight is not None:
        w = w * tf.reduce_sum(y_l * class_weight, axis=-1)
    return w


def cross_entropy(y_true, probs, sample_weight=None):
    per_sample = keras.losses.categorical_crossentropy(tf.cast(y_true, probs.dtype), probs)
    if sample_weight is not None:
        per_sample = per_sample * tf.cast(sample_weight, per_sample.dtype)
    return tf.reduce_mean(per_sample)


def metric_name(class_name: str) -> str:
    """A class name as a metric / history.csv column suffix (letters, digits, _)."""
    return re.sub(r"\W+", "_", str(class_name)).strip("_") or "class"
