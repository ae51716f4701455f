"""Where training runs: `tf.distribute` strategies, replica scaling, mixed precision, worker files.

    strategy = get_strategy("auto")              # "one-device", "mirrored", "multi-worker"
    train_teacher(recipe, task, run_dir, strategy=strategy)

Strategies (registered by name, `register_strategy`; `pseudolabel teach/student/run --strategy`):
- `auto`: MirroredStrategy over every GPU when there are several, else TensorFlow's default
  strategy (one device: the GPU when there is one, else the CPU; exactly what runs without any).
- `one-device`: OneDeviceStrategy on the first GPU, else the CPU.
- `mirrored`: MirroredStrategy over the local GPUs (over the logical CPU devices when there is no
  GPU: what the tests use), one replica each, gradients summed with an all-reduce.
- `multi-worker`: MultiWorkerMirroredStrategy over several machines, configured by the standard
  `TF_CONFIG` environment variable (`parse_tf_config` checks it and says what is wrong). Every
  worker runs the same command; create the strategy first thing (TensorFlow requires it before
  any other TF operation). Its `reduce` is adapted so that Keras 3's `fit` works under it.

Scaling rule. A recipe's `train.batch_size` is PER REPLICA: the global batch (what one optimizer
step averages over) is `batch_size x replicas`, and the learning rate is scaled linearly with the
replicas (Goyal et al. 2017, "Accurate, Large Minibatch SGD") unless `train.scale_lr = false`.
On one device nothing changes. `scaled_train_config` applies the rule to a recipe's `[train]`.

Equal updates. Under a strategy each replica computes the loss on its 1/R share of the global
batch and the optimizer SUMS the replicas' gradients (Keras 3, TF backend: `TFOptimizer`
all-reduces with SUM). Keras' own `compute_loss` therefore divides the loss by R; a custom
`train_step` must do the same (`replica_share`), so the update equals the single-device update on
the same global batch. BatchNormalization layers that train are synchronised across replicas
(`synchronize_batchnorm`): they normalise with the global batch's statistics, as on one device.
Dropout and augmentation draw per-replica random numbers, so those differ in their draws only.

Mixed precision (`train.mixed_precision`, `mixed_precision_policy`): "auto" is `mixed_float16` on a
GPU and `float32` on a CPU (where float16 is slower, not faster). The classifier head's output
layer is float32 in any case (`backbones.create_head`), so probabilities and losses stay float32;
Keras wraps the optimizer in a LossScaleOptimizer under `mixed_float16`.

Multi-worker files. Every worker runs the same program; only the chief writes the run directory
given, the other workers write theirs into `<run_dir>/worker-<index>` (`worker_dir`), so no two
processes write the same file and every worker can resume on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable

from pseudolabel.config import ConfigError

STRATEGIES: dict[str, tuple[Callable, str]] = {}  # name -> (factory, one-line help)
PRECISIONS = ("auto", "mixed_float16", "float32")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


class DistributeError(ConfigError):
    """A strategy that cannot be set up as asked (the CLI shows it as a one-line error)."""


def register_strategy(name: str, help: str):
    """Register a `() -> tf.distribute.Strategy` factory under `name` (with a help line)."""

    def register(factory):
        STRATEGIES[name] = (factory, help)
        return factory

    return register


def get_strategy(name: str = "auto"):
    """The `tf.distribute.Strategy` registered as `name` (see the module docstring)."""
    if name not in STRATEGIES:
        raise DistributeError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name][0]()


def resolve_strategy(strategy=None):
    """A strategy object from None ("auto"), a registered name, or a strategy (returned as is)."""
    if strategy is None or isinstance(strategy, str):
        return get_strategy(strategy or "auto")
    return strategy


def _gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")]


@register_strategy("auto", "MirroredStrategy over all GPUs when there are several, else one device")
def _auto():
    import tensorflow as tf

    return _mirrored() if len(_gpus()) > 1 else tf.distribute.get_strategy()


@register_strategy("one-device", "one device: the first GPU, else the CPU")
def _one_device():
    import tensorflow as tf

    gpus = _gpus()
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")


@register_strategy("mirrored", "one machine, one replica per GPU (per logical CPU device without GPUs)")
def _mirrored():
    import tensorflow as tf

    devices = _gpus() or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


@register_strategy("multi-worker", "several machines (MultiWorkerMirroredStrategy), configured by TF_CONFIG")
def _multi_worker():
    import tensorflow as tf

    parse_tf_config()  # a clear message before TensorFlow tries to connect

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """The stock strategy with a `reduce` that Keras 3's `fit` can use (keras-team/keras#20585):
        `fit` reduces a whole (x, y, sample_weight) batch to build the model, which the stock one
        refuses ("Attempt to convert a value (PerReplica...)"), and reduces every scalar log with
        axis=0 ("Invalid reduction dimension 0"). Here: leaf by leaf, scalars across replicas only."""

        def reduce(self, reduce_op, value, axis):
            reduce_one = super().reduce

            def reduce_leaf(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return reduce_one(reduce_op, v, axis=None if rank == 0 else axis)

            return tf.nest.map_structure(reduce_leaf, value)

    return MultiWorkerMirroredStrategy()


def parse_tf_config(text: str | None = None) -> dict:
    """Check `TF_CONFIG` (default: the environment's) and return it parsed.

    It needs `cluster` (job name -> list of "host:port"; at least `worker`) and `task` (`type`, one
    of the cluster's jobs, and `index`, a position in that job's list).
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise DistributeError(f"--strategy multi-worker needs the TF_CONFIG environment variable on every "
                              f"worker, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index 1 on the second machine)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {TF_CONFIG_EXAMPLE}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker"), list) or not cluster["worker"]:
        raise DistributeError(f"TF_CONFIG needs a \"cluster\" with a non-empty \"worker\" list of host:port; "
                              f"got {text}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributeError(f"TF_CONFIG needs a \"task\" whose \"type\" is one of the cluster's jobs "
                              f"({', '.join(cluster)}); got {text}")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise DistributeError(f"TF_CONFIG task index must be 0..{len(cluster[task['type']]) - 1} "
                              f"(a position in cluster[\"{task['type']}\"]); got {index!r}")
    return config


# --------------------------------------------------------------------------- replicas and scaling


def num_replicas(strategy=None) -> int:
    """Replicas that train in sync (1 without a strategy)."""
    import tensorflow as tf

    return int((strategy or tf.distribute.get_strategy()).num_replicas_in_sync)


def global_batch_size(per_replica: int, strategy=None) -> int:
    """The global batch of a per-replica batch: `per_replica x replicas`."""
    return int(per_replica) * num_replicas(strategy)


def scaled_learning_rate(learning_rate: float, strategy=None, *, scale: bool = True) -> float:
    """`learning_rate x replicas` (linear scaling rule), or unchanged when `scale` is False."""
    return float(learning_rate) * (num_replicas(strategy) if scale else 1)


def scaled_train_config(train: dict, strategy, lr_keys: tuple[str, ...]) -> dict:
    """A copy of a recipe's `[train]` with the global batch and scaled learning rates (`lr_keys`)."""
    scale = bool(train.get("scale_lr", True))
    return {**train, "batch_size": global_batch_size(train["batch_size"], strategy),
            **{key: scaled_learning_rate(train[key], strategy, scale=scale) for key in lr_keys}}


def replica_share(loss):
    """`loss / replicas`: what a custom train_step differentiates so that the optimizer's SUM of
    the replicas' gradients is the gradient of the global-batch mean (as Keras' compute_loss)."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * tf.cast(1.0 / replicas, loss.dtype)


def synchronize_batchnorm(model, strategy=None) -> int:
    """Make every BatchNormalization layer of `model` (nested too) use the global batch statistics
    across replicas (Keras' `synchronized`); only under more than one replica. Returns how many."""
    import keras

    from pseudolabel.backbones import nested_layers

    if num_replicas(strategy) == 1:
        return 0
    layers = [layer for layer in nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True  # read at call time, so setting it after building is enough
    return len(layers)


def describe(strategy=None) -> dict:
    """What to record about a strategy: its class, replicas, and this worker's place."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    out = {"strategy": type(strategy).__name__, "replicas": num_replicas(strategy)}
    if resolver is not None and getattr(resolver, "task_type", None):
        out.update(task_type=resolver.task_type, task_index=int(resolver.task_id), chief=is_chief(strategy))
    return out


def describe_training(strategy, scaled_train: dict, model) -> dict:
    """`describe` plus what the scaling rule and the precision made of a recipe (for metrics.json)."""
    replicas = num_replicas(strategy)
    return {**describe(strategy), "global_batch_size": int(scaled_train["batch_size"]),
            "lr_scale": replicas if scaled_train.get("scale_lr", True) else 1, "dtype_policy": model.dtype_policy.name}


# --------------------------------------------------------------------------- mixed precision


def mixed_precision_policy(mode: str = "auto") -> str:
    """The Keras dtype policy of `train.mixed_precision`: "auto" = mixed_float16 on a GPU, else float32."""
    if mode not in PRECISIONS:
        raise DistributeError(f"train.mixed_precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
    if mode == "auto":
        return "mixed_float16" if _gpus() else "float32"
    return mode


@contextlib.contextmanager
def building(strategy=None, precision: str = "float32"):
    """Build and compile models inside this: the strategy's scope, with the dtype policy `precision`
    (a policy name or "auto") for the layers created; the previous global policy comes back after."""
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_precision_policy(precision))
    try:
        with strategy.scope():
            yield strategy
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------------------------------- multi-worker files


def is_chief(strategy=None) -> bool:
    """True unless this is a non-chief worker of a multi-worker strategy (the chief is the "chief"
    task, or worker 0 when the cluster has none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and int(resolver.task_id) == 0 and not has_chief)


def worker_dir(path, strategy=None) -> Path:
    """Where this worker writes `path`: `path` itself on the chief, `path/worker-<index>` elsewhere."""
    path = Path(path)
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    return path / f"{resolver.task_type}-{int(resolver.task_id)}"
