"""TensorFlow's oneDNN CPU kernels off vs on: labeling and student training speed, and the probabilities.

    python scripts/bench_onednn.py                      # about 7 min on 2 cores
    python scripts/bench_onednn.py --quick --out /tmp/bench.md

Why: TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI or newer; on others
(this project's AMD EPYC machines: AVX2, FMA) it stays off unless TF_ENABLE_ONEDNN_OPTS=1. The
package sets that default when it is imported (the user's own setting wins).

The variable is read when TensorFlow is imported, so every variant runs in a fresh Python process
(this script with `--worker`), and the variants alternate (off, on, off, on, ...) so drift hits
both alike. Each process, after one untimed warm-up call of every workload (tracing):
- forward: the compiled forward `label_pools` uses (`pseudolabels.batch_predictor`) on in-memory
  uint8 batches of real House Rooms images, EfficientNet-Lite0, 224 px, batch 64;
- student Lite0 / Lite2: `train_on_batch` steps of a classifier whose top 3 blocks and head train
  (backbone BatchNorm frozen), as the experiments' students on CPU, at 224 / 260 px, batch 32
  (the students' 8 labeled + 24 pseudo-labeled), Adam;
- probabilities: the forward's output on those images, compared between the variants (oneDNN
  computes in another order, so floats round differently).
Real ImageNet weights (the Lite packages), head untrained (no effect on speed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench_common as bc

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
VARIANTS = {"off": "0", "on": "1"}
WORKLOADS = {"forward": "labeling forward, Lite0 224 px, batch 64 (images/s)",
             "student_lite0": "student train step, Lite0 224 px, top 3 blocks, batch 32 (images/s)",
             "student_lite2": "student train step, Lite2 260 px, top 3 blocks, batch 32 (images/s)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (its room folders)")
    p.add_argument("--repeats", type=int, default=3, help="processes of each variant, alternated")
    p.add_argument("--batches", type=int, default=4, help="timed forward batches per process")
    p.add_argument("--steps", type=int, default=4, help="timed train steps per student and process")
    p.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    bc.add_report_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.steps = 1, 1, 1
    return args


# =========================================================================== one process


def worker(args) -> dict:
    """Every workload timed in this process (its oneDNN setting fixed at TensorFlow's import)."""
    import keras
    import numpy as np

    from pseudolabel import pseudolabels
    from pseudolabel.backbones import create_model
    from pseudolabel.pipeline import load_images

    keras.utils.set_random_seed(0)  # the same head in every process: only oneDNN differs
    images = load_images(bc.unlabeled_images(args.data)[:64], 224)
    forward = pseudolabels.batch_predictor(create_model("efficientnet_lite0", 2), "none", 224)
    probs = np.asarray(forward(images))  # warm-up (tracing), and the probabilities compared
    started = time.perf_counter()
    for _ in range(args.batches):
        np.asarray(forward(images))
    result = {"forward": args.batches * len(images) / (time.perf_counter() - started)}
    for name, backbone, size in (("student_lite0", "efficientnet_lite0", 224), ("student_lite2", "efficientnet_lite2", 260)):
        result[name] = _train_rate(backbone, size, args.steps)
    result["probs"] = probs.tolist()
    return result


def _train_rate(backbone: str, size: int, steps: int, batch: int = 32) -> float:
    import keras
    import numpy as np

    from pseudolabel.backbones import create_model
    from pseudolabel.backbones.freezing import freeze_backbone, unfreeze_top_blocks

    keras.utils.set_random_seed(0)
    model = create_model(backbone, 2, image_size=size)
    freeze_backbone(model)
    unfreeze_top_blocks(model, 3)
    model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(batch) % 2, 2)
    model.train_on_batch(x, y)  # warm-up: tracing
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - started)


# =========================================================================== main


def run_variant(args, variant: str, workdir: Path) -> dict:
    """One fresh process with oneDNN `variant`; its result."""
    out = workdir / f"{variant}-{time.monotonic_ns()}.json"
    env = {**os.environ, VARIABLE: VARIANTS[variant]}
    command = [sys.executable, __file__, "--worker", variant, "--result", str(out), "--data", str(args.data),
               "--batches", str(args.batches), "--steps", str(args.steps)]
    subprocess.run(command, env=env, check=True)
    return json.loads(out.read_text())


def section(args, results: dict[str, list[dict]], head: bc.RunHead) -> str:
    import numpy as np

    lines = head.lines(f"Data: {args.data}; {args.repeats} processes of each variant, alternated; "
                       f"{args.batches} forward batches and {args.steps} train steps a student per process")
    lines += ["", "| workload | oneDNN off: median (min-max) | oneDNN on | on / off, median pair (per pair) |",
              "| --- | --- | --- | --- |"]
    for key, name in WORKLOADS.items():
        off, on = ([r[key] for r in results[v]] for v in ("off", "on"))
        pairs = [b / a for a, b in zip(off, on)]
        lines.append(f"| {name} | {_rates(off)} | {_rates(on)} | **{bc.median(pairs):.2f}** "
                     f"({', '.join(f'{x:.2f}' for x in pairs)}) |")
    off_p, on_p = (np.asarray(results[v][0]["probs"]) for v in ("off", "on"))
    lines += ["", f"- Probabilities of the same 64 images, off vs on: largest difference {np.abs(off_p - on_p).max():.1e}; "
              f"the same predicted class for {int((off_p.argmax(1) == on_p.argmax(1)).sum())} of {len(off_p)}.", ""]
    return "\n".join(lines)


def _rates(values) -> str:
    return f"{bc.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        from pseudolabel import quiet

        quiet.quiet_tensorflow()  # no start-up banners from the worker processes
        args.result.write_text(json.dumps(worker(args)))
        return
    head = bc.RunHead("TensorFlow oneDNN off vs on", quick=args.quick)
    results = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench_onednn_") as tmp:
        for rep in range(args.repeats):
            for variant in VARIANTS:
                bc.log(f"repetition {rep + 1} of {args.repeats}: oneDNN {variant}")
                results[variant].append(run_variant(args, variant, Path(tmp)))
    bc.publish(args.report, section(args, results, head))


if __name__ == "__main__":
    main()
