"""A tiny deterministic training under a tf.distribute strategy, for tests/test_distribute.py.

`train_tiny(strategy, init)` trains, from the same initial weights, a compiled classifier (Keras'
own train_step and loss reduction: the teacher's path) and a NoisyStudent (our train_step: the
student's path) for a few SGD steps on fixed data, and returns their final weights plus the
backbone features `predict` gives. SGD, not Adam: Adam is blind to the scale of the gradients, so
it would hide a loss summed instead of averaged over replicas. No dropout, no augmentation: the
only randomness left is the order of floating-point sums.

`train_online(strategy, init)` does the same for the online algorithms (FixMatch, FlexMatch,
FreeMatch: our train_steps with all-gathered thresholds), returning their weights, thresholds,
EMA weights and recorded pseudo-labels.

`run_demo_experiment(strategy, out)` runs the demo experiment (teacher, labeling, one student,
report) end to end under `strategy`.

Run as a script in a fresh process, because TensorFlow must see its logical devices (and
TF_CONFIG) before it initialises:

    python tests/distributed_helpers.py --strategy mirrored --logical-cpus 2 --init init.npz --out out.npz \
        [--experiment DIR] [--online-init init.npz --online-out out.npz]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import numpy as np

SIZE = 16
LABELED_BATCH, UNLABELED_BATCH = 8, 16  # global batches: 4 and 8 per replica on two replicas
STEPS = 3
RECIPE_VALUES = {"model": {"backbone": "tiny_cnn", "image_size": SIZE, "weights": "none", "dropout": 0.0,
                           "drop_connect_rate": 0.0},
                 "train": {"mixed_precision": "float32"}}


def recipe(**train):
    from pseudolabel.config import TeacherRecipe

    return TeacherRecipe.model_validate({**RECIPE_VALUES, "train": {**RECIPE_VALUES["train"], **train}})


def toy_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Labeled images whose class is their brightness, soft-labeled images, and images to predict."""
    rng = np.random.default_rng(seed)

    def images(n):
        y = rng.integers(0, 2, n)
        return (rng.uniform(0, 120, (n, SIZE, SIZE, 3)) + 120 * y[:, None, None, None]).astype(np.float32), y

    x_l, y_l = images(LABELED_BATCH * STEPS)
    x_u, y_u = images(UNLABELED_BATCH * STEPS)
    soft = np.clip(np.eye(2, dtype=np.float32)[y_u] * 0.8 + 0.1, 0, 1)
    return {"x_l": x_l, "y_l": np.eye(2, dtype=np.float32)[y_l], "x_u": x_u, "y_u": soft,
            "x_pred": images(20)[0]}  # 20: the last predict batch is partial


def train_tiny(strategy, init: dict[str, list[np.ndarray]] | None = None):
    """(initial weights, results) of both trainings under `strategy`; `init`: start from these weights."""
    import keras
    import tensorflow as tf

    from pseudolabel.distribute import building
    from pseudolabel.noisy_student import NoisyStudent
    from pseudolabel.training import build_model

    data = toy_data()
    keras.utils.set_random_seed(0)
    teacher, student_net = build_model(recipe(), 2, strategy), build_model(recipe(), 2, strategy)
    if init is not None:
        teacher.set_weights(init["teacher"])
        student_net.set_weights(init["student"])
    start = {"teacher": teacher.get_weights(), "student": student_net.get_weights()}
    with building(strategy):
        teacher.compile(optimizer=keras.optimizers.SGD(0.02), loss="categorical_crossentropy")
        student = NoisyStudent(student_net, unlabeled_weight=2.0, class_weight=[1.0, 3.0])
        student.compile(optimizer=keras.optimizers.SGD(0.02))

    labeled = tf.data.Dataset.from_tensor_slices((data["x_l"], data["y_l"])).batch(LABELED_BATCH, drop_remainder=True)
    unlabeled = tf.data.Dataset.from_tensor_slices((data["x_u"], data["y_u"])).batch(UNLABELED_BATCH,
                                                                                     drop_remainder=True)
    teacher.fit(labeled, epochs=1, steps_per_epoch=STEPS, class_weight={0: 1.0, 1: 3.0}, shuffle=False, verbose=0)
    student.fit(tf.data.Dataset.zip((labeled, unlabeled)), epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0)
    features = teacher.get_layer("backbone").predict(
        tf.data.Dataset.from_tensor_slices(data["x_pred"]).batch(LABELED_BATCH), verbose=0)
    return start, {"teacher": teacher.get_weights(), "student": student_net.get_weights(), "features": [features]}


ONLINE = (("fixmatch", {}), ("flexmatch", {"threshold_warmup": True}), ("freematch", {"threshold_momentum": 0.5}))


def train_online(strategy, init: dict[str, list[np.ndarray]] | None = None):
    """(initial weights, results) of each online algorithm under `strategy` (see the module doc)."""
    import keras
    import tensorflow as tf

    from pseudolabel.algorithms import get_algorithm
    from pseudolabel.distribute import building
    from pseudolabel.training import build_model

    data = toy_data()
    x_u = data["x_u"]
    strong = (x_u[:, ::-1] * 0.7).astype(np.float32)   # another view of the same images
    start, results = {}, {}
    for name, options in ONLINE:
        keras.utils.set_random_seed(0)
        net = build_model(recipe(), 2, strategy)
        if init is not None:
            net.set_weights(init[name])
        start[name] = net.get_weights()
        with building(strategy):
            model = get_algorithm(name)(net, num_classes=2, n_unlabeled=len(x_u), threshold=0.55, lambda_u=2.0,
                                        warmup_steps=2, ema_decay=0.5, class_weight=[1.0, 3.0], **options)
            model.compile(optimizer=keras.optimizers.SGD(0.02), jit_compile=False)
        labeled = tf.data.Dataset.from_tensor_slices((data["x_l"], data["y_l"])).batch(LABELED_BATCH,
                                                                                       drop_remainder=True)
        unlabeled = tf.data.Dataset.from_tensor_slices(((x_u, strong), np.arange(len(x_u)))).batch(
            UNLABELED_BATCH, drop_remainder=True)
        model.fit(tf.data.Dataset.zip((labeled, unlabeled)), epochs=1, steps_per_epoch=STEPS, shuffle=False,
                  verbose=0)
        results[name] = net.get_weights() + [np.asarray(model.thresholds())] + \
            [np.asarray(e.numpy()) for e in model.ema_weights] + [np.asarray(model.epoch_labels.numpy())]
    return start, results


def write_tiny_demo(out) -> Path:
    """The demo's files, tiny: 40 labeled and 30 pool images, a teacher and a student of 1-2 epochs."""
    from pseudolabel.demo import write_demo

    return write_demo(out, n_labeled=40, n_unlabeled=30, epochs=1)


def run_demo_experiment(strategy, out) -> None:
    """The tiny demo experiment under `strategy` (its files written first unless they are there)."""
    from pseudolabel.config import load_experiment
    from pseudolabel.rounds import run_experiment

    experiment = Path(out) / "experiment.toml"
    if not experiment.exists():
        write_tiny_demo(out)
    run_experiment(load_experiment(experiment), strategy=strategy)


def ray_train_tiny(config: dict) -> None:
    """A Ray Train worker (TF_CONFIG set by Ray): `train_tiny` under the multi-worker strategy from
    `config["init"]`, results saved to `config["out"]/worker-<rank>.npz`."""
    import ray.train
    import tensorflow as tf

    from pseudolabel.distribute import get_strategy, num_replicas

    tf.config.threading.set_intra_op_parallelism_threads(1)  # modest: the tests share the machine
    strategy = get_strategy("multi-worker")
    _, results = train_tiny(strategy, load(config["init"]))
    rank = ray.train.get_context().get_world_rank()
    save(Path(config["out"]) / f"worker-{rank}.npz", {**results, "replicas": [np.array(num_replicas(strategy))]})


def save(path, weights: dict[str, list[np.ndarray]]) -> None:
    np.savez(path, **{f"{name}/{i}": w for name, ws in weights.items() for i, w in enumerate(ws)})


def load(path) -> dict[str, list[np.ndarray]]:
    with np.load(path) as npz:
        keys = sorted(npz.files, key=lambda k: (k.split("/")[0], int(k.split("/")[1])))
        out: dict[str, list[np.ndarray]] = {}
        for key in keys:
            out.setdefault(key.split("/")[0], []).append(npz[key])
    return out


def free_ports(n: int) -> list[int]:
    """`n` ports free on 127.0.0.1 right now (bound together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--logical-cpus", type=int, default=1)
    parser.add_argument("--init", help="train_tiny from these weights, save the results to --out")
    parser.add_argument("--out")
    parser.add_argument("--experiment", help="then run the demo experiment in this directory")
    parser.add_argument("--online-init", help="train_online from these weights, save the results to --online-out")
    parser.add_argument("--online-out")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # modest: the tests share the machine
    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    from pseudolabel.distribute import get_strategy, num_replicas

    strategy = get_strategy(args.strategy)
    if args.init:
        _, results = train_tiny(strategy, load(args.init))
        save(args.out, {**results, "replicas": [np.array(num_replicas(strategy))]})
    if args.online_init:
        _, results = train_online(strategy, load(args.online_init))
        save(args.online_out, {**results, "replicas": [np.array(num_replicas(strategy))]})
    if args.experiment:
        run_demo_experiment(strategy, args.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
