"""Where the time of a student epoch goes: data, forward/backward, callbacks, validation.

    python scripts/profile_student.py                      # 2 full epochs + 30 loop steps (2-4 min on 2 cores)
    python scripts/profile_student.py --quick --out /tmp/bench.md
    python scripts/profile_student.py --unfreeze-blocks all --trace /tmp/student_trace

The student is built exactly as `students.train_student` builds it (recipe, trainable blocks,
batch plan, zipped labeled + pseudo-labeled pipelines with RandAugment, decode caches, class
weights, Adam), on the House Rooms train split plus unlabeled Bedroom images with random soft
targets (a teacher's targets would not change the timings). Two measurements:

1. A real `model.fit` of `--epochs` epochs (a full epoch each: the batch plan's steps) with
   validation and the callbacks `train_student` uses (`training.standard_callbacks`: early
   stopping, best-weights checkpoint, CSV history, TensorBoard when installed, BackupAndRestore),
   each wrapped in a proxy that times its hooks, and two clock callbacks, one first and one last
   in the list, that stamp the batch, validation and epoch boundaries. So an epoch splits into:
   train steps (`train_function`: the in-graph fetch of the batch + forward/backward + update),
   per-batch callback hooks, validation, each callback's epoch hooks, and the rest (Keras' loop,
   progress bar, History). Epoch 1 also decodes every image into the caches; later epochs are
   the steady state. Tracing the train and test functions happens before, in a warm-up, and is
   reported apart.
2. The train steps split into data wait and compute, which `fit` cannot show because it fetches
   batches inside the graph: a loop over the same dataset that times `next(iterator)` (blocked
   on the input pipeline: what prefetching did not hide) and Keras' own compiled train step on
   the batch (`model.train_function([batch])`), for `--loop-steps` steps after the fit, i.e. with
   full caches. `--trace DIR` records a TensorFlow profiler trace of the loop (TensorBoard's
   profile plugin reads it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _bench_common as bc

DEFAULT_STUDENT = bc.REPO / "students" / "efficientnet_lite0.toml"
HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
         "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=bc.DEFAULT_SPLIT, help="fixed split CSV")
    p.add_argument("--recipe", type=Path, default=DEFAULT_STUDENT, help="student recipe")
    p.add_argument("--unfreeze-blocks", default="3",
                   help='trainable top blocks ("all": whole backbone); default 3 as the experiments on CPU')
    p.add_argument("--pseudo", type=int, default=796,
                   help="pseudo-labeled images (unlabeled Bedroom images; 796 = the bedroom-pool experiment)")
    p.add_argument("--epochs", type=int, default=2, help="profiled fit epochs (1: the cache-filling one)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the batch plan's full epoch)")
    p.add_argument("--loop-steps", type=int, default=30, help="steps of the data-wait / compute loop")
    p.add_argument("--trace", type=Path, default=None, help="write a TensorFlow profiler trace of the loop here")
    bc.add_report_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.pseudo, args.steps, args.loop_steps = 48, 4, 4
    args.unfreeze_blocks = "all" if args.unfreeze_blocks == "all" else int(args.unfreeze_blocks)
    return args


# =========================================================================== instrumentation


def timed(callback, totals: dict):
    """A proxy of `callback` adding the seconds of each of its hooks to totals[(name, hook)]."""
    import keras

    name = type(callback).__name__

    class Timed(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            callback.set_model(model)

        def set_params(self, params):
            super().set_params(params)
            callback.set_params(params)

    def hook(hook_name):
        inner = getattr(callback, hook_name)

        def run(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                totals[(name, hook_name)] += time.perf_counter() - started

        return run

    for hook_name in HOOKS:
        setattr(Timed, hook_name, hook(hook_name))
    return Timed()


class Clocks:
    """Two callbacks, put first and last in the list, stamping the boundaries of steps, validation and epochs."""

    def __init__(self):
        import keras

        self.epochs: list[dict] = []
        clocks = self

        class First(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clocks.epochs.append(defaultdict(float, start=time.perf_counter(), steps=0))

            def on_train_batch_end(self, batch, logs=None):   # right after train_function returned
                e = clocks.epochs[-1]
                e["step_s"] += time.perf_counter() - e.pop("step_started")
                e["steps"] += 1
                e["mark"] = time.perf_counter()

            def on_test_begin(self, logs=None):
                clocks.epochs[-1]["val_started"] = time.perf_counter()

        class Last(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):  # right before train_function runs
                clocks.epochs[-1]["step_started"] = time.perf_counter()

            def on_test_end(self, logs=None):
                e = clocks.epochs[-1]
                e["val_s"] += time.perf_counter() - e.pop("val_started")

            def on_epoch_end(self, epoch, logs=None):
                clocks.epochs[-1]["end"] = time.perf_counter()

        self.first, self.last = First(), Last()


# =========================================================================== the measurements


def profile_fit(s, callbacks, epochs: int, steps: int, verbose: int = 2) -> list[dict]:
    import keras

    totals: dict = defaultdict(float)
    clocks = Clocks()
    proxied = [timed(c, totals) for c in callbacks]
    snapshots = []

    class Snapshot(keras.callbacks.Callback):   # copies the totals at each epoch's end
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(dict(totals))

    # Snapshot right before the Last clock: the epoch's callback totals include every epoch hook.
    s.model.fit(s.train_ds, validation_data=s.val_ds, epochs=epochs, steps_per_epoch=steps, verbose=verbose,
                shuffle=False, callbacks=[clocks.first, *proxied, Snapshot(), clocks.last])
    rows = []
    previous: dict = {}
    for e, snap in zip(clocks.epochs, snapshots):
        delta = {k: v - previous.get(k, 0.0) for k, v in snap.items()}
        previous = snap
        batch_hooks = sum(v for (_, h), v in delta.items() if h in ("on_train_batch_begin", "on_train_batch_end"))
        epoch_hooks = defaultdict(float)
        for (name, h), v in delta.items():
            if h in ("on_epoch_begin", "on_epoch_end"):   # on_train_begin/end lie outside the epochs
                epoch_hooks[name] += v
        rows.append({"wall_s": e["end"] - e["start"], "steps": e["steps"], "step_s": e["step_s"],
                     "batch_hooks_s": batch_hooks, "val_s": e["val_s"],
                     "epoch_hooks": dict(epoch_hooks)})
    return rows


def profile_loop(s, steps: int, trace: Path | None) -> dict:
    """Data wait (blocked in next()) vs Keras' compiled train step, batch by batch."""
    import tensorflow as tf

    iterator = iter(s.train_ds)
    s.model.train_function([next(iterator)])      # traces Keras' one-step function (not timed)
    if trace is not None:
        tf.profiler.experimental.start(str(trace))
    wait = compute = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        logs = s.model.train_function([batch])
        float(logs["loss"])                        # the step has finished
        t2 = time.perf_counter()
        wait, compute = wait + t1 - t0, compute + t2 - t1
    total = time.perf_counter() - started
    if trace is not None:
        tf.profiler.experimental.stop()
    return {"steps": steps, "wait_s": wait, "compute_s": compute, "total_s": total}


def warm_up(s) -> float:
    started = time.perf_counter()
    s.model.fit(s.train_ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    s.model.evaluate(s.val_ds.take(1), verbose=0)
    return time.perf_counter() - started


# =========================================================================== report


def pct(x: float, total: float) -> str:
    return f"{100 * x / total:.1f}%" if total > 0 else "-"


def section(args, command, machine_text, s, fit_rows, loop, trace_s, wall_s) -> str:
    plan = s.plan
    per_step = plan["labeled_batch"] + plan["unlabeled_batch"]
    lines = bc.section_head(
        "Student epoch profile" + (" (QUICK, not results)" if args.quick else ""), command, machine_text,
        f"Student `{args.recipe.name}`: {bc.describe_student(s)}",
        f"Data: train split ({plan['n_labeled']} labeled) + {plan['n_pseudo']} unlabeled Bedroom images with random "
        f"soft targets; {fit_rows[0]['steps']} steps an epoch ({per_step} images a step); callbacks as "
        f"`train_student`: {', '.join(sorted({n for row in fit_rows for n in row['epoch_hooks']}))}",
        f"Not in the tables: tracing the train and test functions ({trace_s:.1f} s, once per training); "
        f"whole script {wall_s / 60:.1f} min",
    )
    lines += bc.quick_note(args.quick)
    head = "| component | " + " | ".join(f"epoch {i + 1}: s | share" for i in range(len(fit_rows))) + " |"
    lines += ["### 1. A `fit` epoch, by component", "", head,
              "| --- |" + " --- | --- |" * len(fit_rows)]

    def row(label, values):
        cells = " | ".join(f"{v:.2f} | {pct(v, r['wall_s'])}" for v, r in zip(values, fit_rows))
        lines.append(f"| {label} | {cells} |")

    row("train steps (in-graph batch fetch + forward/backward + update)", [r["step_s"] for r in fit_rows])
    row("per-batch callback hooks", [r["batch_hooks_s"] for r in fit_rows])
    row("validation (forward on the val split, test hooks)", [r["val_s"] for r in fit_rows])
    names = sorted({n for r in fit_rows for n in r["epoch_hooks"]})
    for name in names:
        row(f"epoch hooks: {name}", [r["epoch_hooks"].get(name, 0.0) for r in fit_rows])
    rest = [r["wall_s"] - r["step_s"] - r["batch_hooks_s"] - r["val_s"] - sum(r["epoch_hooks"].values())
            for r in fit_rows]
    row("other (Keras loop, progress bar, History, iterator start)", rest)
    row("**epoch wall time**", [r["wall_s"] for r in fit_rows])
    last = fit_rows[-1]
    lines += [
        "",
        f"Train throughput in the last epoch: {last['steps'] * per_step / last['step_s']:.1f} images/s within the "
        f"steps, {last['steps'] * per_step / last['wall_s']:.1f} images/s over the whole epoch.",
        "",
        f"### 2. The train steps split: data wait vs compute ({loop['steps']} steps of a loop over the same "
        f"pipeline, caches full)",
        "",
        "| component | s | share | per step |",
        "| --- | --- | --- | --- |",
        f"| data wait (blocked in `next(iterator)`: what prefetching did not hide) | {loop['wait_s']:.2f} "
        f"| {pct(loop['wait_s'], loop['total_s'])} | {1000 * loop['wait_s'] / loop['steps']:.0f} ms |",
        f"| train step (Keras' compiled step: forward/backward + update) | {loop['compute_s']:.2f} "
        f"| {pct(loop['compute_s'], loop['total_s'])} | {1000 * loop['compute_s'] / loop['steps']:.0f} ms |",
        f"| loop overhead | {loop['total_s'] - loop['wait_s'] - loop['compute_s']:.2f} "
        f"| {pct(loop['total_s'] - loop['wait_s'] - loop['compute_s'], loop['total_s'])} | - |",
        f"| **total** | {loop['total_s']:.2f} | 100% | {1000 * loop['total_s'] / loop['steps']:.0f} ms |",
        "",
        "The input pipeline's threads (decode, RandAugment) share the CPU cores with the train step, so a "
        "small data wait does not mean the pipeline is free: it can still slow the step down "
        "(`bench_pipeline.py` measures that as the ratio to in-memory batches).",
    ]
    if args.trace:
        lines.append(f"TensorFlow profiler trace of the loop: `{args.trace}` (`tensorboard --logdir {args.trace}`, "
                     "Profile tab, needs the tensorboard-plugin-profile package).")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command, machine_text = bc.command_line(), bc.machine()
    started = time.perf_counter()
    from pseudolabel import callbacks as standard

    task, _ = bc.load_house_rooms(args.data, args.split)
    pseudo_paths = bc.unlabeled_images(args.data, rooms=("Bedroom",), limit=args.pseudo)
    targets = bc.soft_targets(len(pseudo_paths), len(task.class_map.names))
    with tempfile.TemporaryDirectory(prefix="profile_student_") as tmp:
        run_dir = Path(tmp) / "run"
        s = bc.student_setup(args.recipe, task, pseudo_paths, targets, run_dir,
                             overrides={"train": {"unfreeze_blocks": args.unfreeze_blocks}})
        bc.log(bc.describe_student(s))
        bc.log("warming up: tracing the train and test functions")
        trace_s = warm_up(s)
        steps = args.steps or s.plan["steps_per_epoch"]
        callbacks = standard.standard_callbacks(run_dir, monitor="val_loss", patience=s.recipe.train.patience,
                                                backup=True)
        bc.log(f"profiling fit: {args.epochs} epochs of {steps} steps with validation and the standard callbacks")
        fit_rows = profile_fit(s, callbacks, args.epochs, steps)
        bc.log(f"profiling the data wait: {args.loop_steps} steps")
        loop = profile_loop(s, args.loop_steps, args.trace)
    text = section(args, command, machine_text, s, fit_rows, loop, trace_s, time.perf_counter() - started)
    bc.publish(args.report, text)


if __name__ == "__main__":
    main()
