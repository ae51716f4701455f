"""tf.data autotuning on vs off in the package's datasets: whole passes, as training and evaluation run them.

    python scripts/bench_autotune.py                      # about 5 min on 2 cores
    python scripts/bench_autotune.py --quick --out /tmp/bench.md

Why: releasing an autotuned tf.data iterator waits for the autotuner's next tick, and the ticks
come at 10 ms, 30 ms, 70 ms, 150 ms, ... after the iterator starts (the period doubles up to 60 s).
A pass that ends just after a tick therefore ends up to twice as late as its last batch. Keras
releases its iterator at the end of every `predict`, `evaluate` and validation pass, so the wait
is paid once per epoch (validation) and once per prediction or feature extraction.

Each workload runs in ONE process, alternating the variants (off, on, off, on, ...), each a whole
Keras call from dataset to returned array (the iterator released inside it, as in the package):
- val: `model.predict` over the validation images, cached in memory (what every epoch's
  validation pass reads; the cache is filled before timing);
- test: the same over the test images;
- features: `backbone.predict` over N unlabeled pool images, decoded from the JPEGs (no cache):
  what the probe's feature extraction and the pool's features do;
- head: teacher phase 1, a new head fitted for 40 epochs on cached features (289 train, 68 val,
  1280 wide, as Lite0's on House Rooms; random values, which change nothing about speed), from
  `pipeline.array_dataset` (the package) vs NumPy arrays handed to Keras, which builds an
  autotuned tf.data pipeline of its own (what the teacher did before).
Model: EfficientNet-Lite0, real ImageNet weights, 224 px, batch 32. `make_dataset(autotune=False)`
and `array_dataset` are what the package uses; `autotune=True` is tf.data's default, which it used before.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _bench_common as bc

SECTION_TITLE = "tf.data autotuning on vs off"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=bc.DEFAULT_SPLIT, help="fixed split CSV")
    p.add_argument("--repeats", type=int, default=7, help="passes of each variant, alternated")
    p.add_argument("--pool", type=int, default=400, help="unlabeled images in the feature-extraction pass")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--head-epochs", type=int, default=40, help="epochs of the phase-1 head workload")
    bc.add_report_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.pool, args.head_epochs = 2, 64, 3
    return args


def workloads(args):
    """{name: (description, make(autotune) -> a zero-argument pass)} over the real data."""
    from pseudolabel.backbones import create_model
    from pseudolabel.lifecycle import task_subset
    from pseudolabel.pipeline import make_dataset

    task, _ = bc.load_house_rooms(args.data, args.split)
    model = create_model("efficientnet_lite0", len(task.class_map.names))
    backbone = model.get_layer("backbone")
    size = int(model.input_shape[1])
    pool = bc.unlabeled_images(args.data, limit=args.pool)

    def cached(name):
        paths, _ = task_subset(task, name)
        datasets = {on: make_dataset(paths, image_size=size, batch_size=args.batch_size, cache="memory",
                                     autotune=on) for on in (False, True)}
        for ds in datasets.values():      # fill the caches (and trace predict) before timing
            model.predict(ds, verbose=0)
        return f"`model.predict`, {len(paths)} {name} images cached in memory", \
            lambda on: lambda: model.predict(datasets[on], verbose=0)

    def features(on):
        ds = make_dataset(pool, image_size=size, batch_size=args.batch_size, autotune=on)
        return lambda: backbone.predict(ds, verbose=0)

    backbone.predict(make_dataset(pool[:args.batch_size], image_size=size, batch_size=args.batch_size), verbose=0)
    return {"val": cached("val"), "test": cached("test"),
            "features": (f"`backbone.predict`, {len(pool)} pool JPEGs decoded (no cache)", features),
            "head": (f"teacher phase 1: a head fitted {args.head_epochs} epochs on cached features", head_fit(args))}


def head_fit(args):
    """make(autotune) for the phase-1 workload: array_dataset (off) or NumPy arrays to Keras (on)."""
    import numpy as np

    from pseudolabel.backbones import create_head
    from pseudolabel.pipeline import array_dataset
    from pseudolabel.training import compile_classifier

    rng = np.random.default_rng(0)
    train_x, val_x = rng.normal(size=(289, 1280)).astype(np.float32), rng.normal(size=(68, 1280)).astype(np.float32)
    train_y, val_y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 289)], np.eye(2, dtype=np.float32)[rng.integers(0, 2, 68)]

    def make(on):
        def run():
            head = create_head(1280, 2)
            compile_classifier(head, 1e-3, auc=True)
            if on:
                head.fit(train_x, train_y, validation_data=(val_x, val_y), epochs=args.head_epochs,
                         batch_size=args.batch_size, shuffle=True, verbose=0)
            else:
                head.fit(array_dataset((train_x, train_y), batch_size=args.batch_size, shuffle=True),
                         validation_data=array_dataset((val_x, val_y), batch_size=args.batch_size),
                         epochs=args.head_epochs, shuffle=False, verbose=0)
        return run
    return make


def measure(args) -> dict:
    results = {}
    for name, (description, make) in workloads(args).items():
        bc.log(f"{name}: {description}, {args.repeats} passes of each variant")
        times = bc.alternate({"off": make(False), "on": make(True)}, args.repeats)
        results[name] = {"description": description, "times": times,
                         "pairs": [on / off for off, on in zip(times["off"], times["on"])]}
    return results


def section(results: dict) -> list[str]:
    lines = ["| pass | autotune off (the package): median (min-max) | autotune on (tf.data's default) "
             "| on / off, median pair (per pair) |", "| --- | --- | --- | --- |"]
    total = {"off": 0.0, "on": 0.0}
    for name, r in results.items():
        t = r["times"]
        total["off"] += bc.median(t["off"])
        total["on"] += bc.median(t["on"])
        pairs = ", ".join(f"{x:.2f}" for x in r["pairs"])
        lines.append(f"| {name}: {r['description']} | {bc.spread(t['off'])} | {bc.spread(t['on'])} "
                     f"| **{bc.median(r['pairs']):.2f}** ({pairs}) |")
    lines += ["", f"- Sum of the medians: off {total['off']:.2f} s, on {total['on']:.2f} s "
                  f"(on / off {total['on'] / total['off']:.2f}).",
              "- A pair above 1 is a pass that waited for the autotuner's tick after its last batch; the "
              "wait depends on where the pass ends between two ticks, hence the spread.", ""]
    return lines


def main(argv=None):
    args = parse_args(argv)
    head = bc.RunHead(SECTION_TITLE, args.quick)
    import tensorflow as tf

    results = measure(args)
    details = (f"Data: {args.data}; TensorFlow {tf.__version__}; EfficientNet-Lite0 (ImageNet weights), 224 px, "
               f"batch {args.batch_size}; variants alternated")
    bc.publish(args.report, "\n".join(head.lines(details) + section(results)))


if __name__ == "__main__":
    main()
