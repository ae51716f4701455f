"""The Noisy Student train step: a `keras.Model` wrapping the student classifier.

Each step takes a labeled batch of b images and a pseudo-labeled batch of round(ratio * b)
images; loss = CE(labeled, class-weighted) + unlabeled_weight * CE(pseudo-labeled, soft targets),
each a mean over its batch. With `unlabeled_weight` = ratio (the recipes' default) every image,
labeled or pseudo-labeled, weighs the same, as in the official code. Both batches go through the
student in ONE forward pass (concatenated), so batch-norm layers that train see both; with
`unlabeled_weight = 0` the pseudo-labeled images are left out of the pass entirely. The teacher
is not in the graph at all: its labels were computed beforehand, so the loss cannot update it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pseudolabel.distribute import replica_share


@keras.saving.register_keras_serializable(package="pseudolabel")
class NoisyStudent(keras.Model):
    """Trains `student` on `((x_l, y_l), (x_u, y_u))` batches (or labeled `(x_l, y_l)` batches
    alone: the labels-only control); evaluates on `(x, y)` batches.

    `y_l` are one-hot (or smoothed) labels, `y_u` soft pseudo-label targets, both `[B, K]`.
    `class_weight` (`[K]`, optional) weights each labeled image by its class: per-sample weight
    `sum_k y_k w_k`. The labeled element may also carry explicit sample weights `(x_l, y_l, w_l)`.
    Losses are means over the batch (Keras' sum_over_batch_size; over the global batch under a
    tf.distribute strategy). Save `.student`, not this wrapper.
    """

    def __init__(self, student: keras.Model, *, unlabeled_weight: float = 1.0, class_weight=None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.unlabeled_weight = float(unlabeled_weight)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self._class_weight = None if class_weight is None else tf.constant(self.class_weight, tf.float32)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.labeled_loss_tracker = keras.metrics.Mean(name="labeled_loss")
        self.unlabeled_loss_tracker = keras.metrics.Mean(name="unlabeled_loss")
        self.accuracy_tracker = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.built = student.built  # its weights are the student's, which already exist

    @property
    def metrics(self):
        # Listed so Keras resets them at every epoch and before every evaluation.
        return [self.loss_tracker, self.labeled_loss_tracker, self.unlabeled_loss_tracker, self.accuracy_tracker]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _labeled_weights(self, y_l, w_l):
        if w_l is None and self._class_weight is None:
            return None
        w = tf.ones_like(y_l[:, 0]) if w_l is None else tf.cast(w_l, tf.float32)
        if self._class_weight is not None:
            w = w * tf.reduce_sum(tf.cast(y_l, tf.float32) * self._class_weight, axis=-1)
        return w

    def train_step(self, data):
        (x_l, y_l, w_l), (x_u, y_u) = _unpack_train_batch(data)
        y_l = tf.cast(y_l, tf.float32)
        # Python constants, decided when tracing: a labeled-only batch has no pseudo-labeled part.
        use_unlabeled = self.unlabeled_weight != 0.0 and x_u is not None
        y_u = tf.cast(y_u, tf.float32) if use_unlabeled else None
        n_l = tf.shape(x_l)[0]
        with tf.GradientTape() as tape:
            x = tf.concat([x_l, x_u], axis=0) if use_unlabeled else x_l
            probs = self.student(x, training=True)
            labeled_loss = _cross_entropy(y_l, probs[:n_l], self._labeled_weights(y_l, w_l))
            if use_unlabeled:
                unlabeled_loss = _cross_entropy(y_u, probs[n_l:])
                loss = labeled_loss + self.unlabeled_weight * unlabeled_loss
            else:
                unlabeled_loss = tf.constant(0.0)
                loss = labeled_loss
            if self.student.losses:  # weight regularisers, if a backbone has any
                loss = loss + tf.add_n(self.student.losses)
            # Under a tf.distribute strategy this step runs per replica on its share of the global
            # batch and the optimizer SUMS the replicas' gradients: `replica_share` (loss / replicas)
            # makes the update that of the global-batch mean. `scale_loss`: the LossScaleOptimizer's
            # factor under mixed_float16 (its `apply` divides it out again).
            scaled_loss = self.optimizer.scale_loss(replica_share(loss))
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        self.loss_tracker.update_state(loss)
        self.labeled_loss_tracker.update_state(labeled_loss)
        self.unlabeled_loss_tracker.update_state(unlabeled_loss)
        self.accuracy_tracker.update_state(y_l, probs[:n_l])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        # Validation: labeled images only, unweighted CE (as Keras' fit(class_weight=...) does).
        x, y = data[0], tf.cast(data[1], tf.float32)
        probs = self.student(x, training=False)
        loss = _cross_entropy(y, probs)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(y, probs)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.student(x, training=False)

    def get_config(self):
        return {
            "student": keras.saving.serialize_keras_object(self.student),
            "unlabeled_weight": self.unlabeled_weight,
            "class_weight": self.class_weight,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return cls(student, **config)


def _unpack_train_batch(data):
    """((x_l, y_l[, w_l]), (x_u, y_u)) -> ((x_l, y_l, w_l or None), (x_u, y_u)); a labeled batch
    alone, (x_l, y_l[, w_l]) (the labels-only control), -> ((x_l, y_l, w_l or None), (None, None))."""
    if not isinstance(data[0], (tuple, list)):
        x_l, y_l, *rest = data
        return (x_l, y_l, rest[0] if rest else None), (None, None)
    labeled, unlabeled = data
    x_l, y_l, *rest = labeled
    x_u, y_u = unlabeled[0], unlabeled[1]
    return (x_l, y_l, rest[0] if rest else None), (x_u, y_u)


def _cross_entropy(y_true, probs, sample_weight=None):
    """Mean categorical cross-entropy of probabilities (soft targets allowed)."""
    per_sample = keras.losses.categorical_crossentropy(tf.cast(y_true, probs.dtype), probs)
    if sample_weight is not None:
        per_sample = per_sample * tf.cast(sample_weight, per_sample.dtype)
    return tf.reduce_mean(per_sample)
