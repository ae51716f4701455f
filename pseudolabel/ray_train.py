"""Training on Ray Train: every model of an experiment trained by N Ray workers in sync.

    pseudolabel run experiment.toml --engine ray --workers 2 [--address ADDR]

Ray Train's `TensorflowTrainer` starts N workers (one CPU each unless told otherwise) and sets
`TF_CONFIG` for each, so every worker runs today's multi-worker code path unchanged:
`distribute.get_strategy("multi-worker")` first thing, then `rounds.run_experiment` under it.
Only the chief (worker 0) writes the run directories and the report; the other workers keep their
files in `<run dir>/worker-<i>` (`distribute.worker_dir`). Inside the workers the pools are
labeled by the local engine, each worker labeling them itself as under any multi-worker strategy
(Ray Data tasks would wait for the CPUs the workers hold). The driver then reads the report the
chief wrote (OUTPUT/report/compare.json; per seed, OUTPUT/seed-<s>/report/compare.json).

The workers read the experiment, the data and the output directory at the same paths as the
driver: on one machine that holds; on a cluster, use the same paths on every node or shared storage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pseudolabel.distribute import DistributeError

__all__ = ["experiment_loop", "run_on_ray_train", "train_experiment_on_ray"]


def run_on_ray_train(loop: Callable[[dict], None], config: dict, *, workers: int, address: str | None = None,
                     storage: str | Path | None = None, name: str = "pseudolabel") -> None:
    """Run `loop(config)` on `workers` Ray Train workers (TF_CONFIG set for each, worker 0 the
    chief), on a local Ray or the cluster at `address`; a failed worker is a DistributeError."""
    from pseudolabel.pseudolabels.ray_engine import connect

    if int(workers) < 1:
        raise DistributeError(f"--workers must be >= 1, got {workers}")
    connect(address, num_cpus=max(2, int(workers)))
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    storage = Path(storage or Path(config.get("output") or ".") / ".ray_train").resolve()
    trainer = TensorflowTrainer(_with_keras3(loop), train_loop_config=config,
                                scaling_config=ScalingConfig(num_workers=int(workers), use_gpu=False),
                                run_config=RunConfig(name=name, storage_path=str(storage)))
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps a worker's error in its own (TrainingFailedError, ...)
        raise DistributeError(f"training on Ray failed: {_first_line(e)} (Ray's logs: {storage})") from None
    if getattr(result, "error", None):
        raise DistributeError(f"training on Ray failed: {_first_line(result.error)} (Ray's logs: {storage})")


def _with_keras3(loop: Callable[[dict], None]) -> Callable[[dict], None]:
    """Ray's TensorFlow backend sets TF_USE_LEGACY_KERAS=1 (for tf_keras); this project is Keras 3."""

    def worker(config: dict) -> None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        from pseudolabel import quiet

        quiet.quiet_tensorflow()
        loop(config)

    return worker


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # A worker's own error is the last line of Ray's wrapped traceback.
    return (lines[-1] if lines else type(error).__name__)[:300]


def experiment_loop(config: dict) -> None:
    """One Ray Train worker's share of `train_experiment_on_ray`: the experiment under the
    multi-worker strategy (created first, as TensorFlow requires)."""
    from pseudolabel.config import PoolConfig, load_experiment
    from pseudolabel.distribute import get_strategy
    from pseudolabel.rounds import run_experiment

    strategy = get_strategy("multi-worker")
    experiment = load_experiment(config["experiment"], overrides=config.get("overrides"))
    run_experiment(experiment, strategy=strategy, extra_pools=tuple(PoolConfig(**p) for p in config["extra_pools"]),
                   restart=config["restart"], rounds=config["rounds"], seeds=config["seeds"],
                   pool_truth=tuple(config["pool_truth"]))


def train_experiment_on_ray(experiment, *, workers: int, address: str | None = None, extra_pools=(),
                            restart: bool = False, rounds=None, seeds=None, pool_truth=(),
                            overrides: dict | None = None) -> dict:
    """Train every model of `experiment` (a loaded `config.Experiment`) on `workers` Ray Train
    workers; returns the chief's report summary, as `rounds.run_experiment` does."""
    config = {"experiment": str(experiment.path), "overrides": overrides, "output": str(experiment.output),
              "extra_pools": [p.model_dump(mode="json") for p in extra_pools], "restart": bool(restart),
              "rounds": rounds, "seeds": None if seeds is None else list(seeds), "pool_truth": list(pool_truth)}
    run_on_ray_train(experiment_loop, config, workers=workers, address=address,
                     storage=Path(experiment.output) / ".ray_train", name=f"{experiment.name}")
    return chief_summary(experiment, seeds)


def chief_summary(experiment, seeds=None) -> dict:
    """What `run_experiment` returned on the chief, read from the report files it wrote."""
    from pseudolabel.rundir import read_json
    from pseudolabel.seeds import SEEDS_JSON

    out = Path(experiment.output)
    seeds = list(seeds if seeds is not None else experiment.seeds)
    if not seeds:
        return read_json(out / "report" / "compare.json")
    summary = {seed: read_json(out / f"seed-{seed}" / "report" / "compare.json") for seed in seeds}
    return {**summary, "seeds": read_json(out / "report" / SEEDS_JSON)}
