"""Input pipeline vs the model: is the model the bottleneck? Appends a section to BENCHMARKS.md.

    python scripts/bench_pipeline.py                       # both parts, full sizes (5-10 min on 2 cores)
    python scripts/bench_pipeline.py --quick --out /tmp/bench.md
    python scripts/bench_pipeline.py --part labeling --images 4096 --repeats 5
    python scripts/bench_pipeline.py --part labeling --images 1000 --reps 2 --no-ray
    python scripts/bench_pipeline.py --part engines --images 20000 --repeats 2
    python scripts/bench_pipeline.py --part ray-startup --repeats 3

Both parts time, in ONE process and alternating the variants in a balanced order (A B, B A,
A B ...) so drift hits both alike, the real pipeline against the same model fed from memory:

(a) Pseudo-labeling: `pseudolabels.label_pools` over N real House Rooms JPEGs (unlabeled room
    images), end to end -- files on disk -> decoding threads -> teacher -> the written table (its
    sha256 column, summary and read-back included) -- vs the same compiled forward that
    label_pools uses (`pseudolabels.batch_predictor`, inference mode) on in-memory float32
    batches of the same batch size and resolution, N images too (label_pools feeds it the
    decoded uint8 batches, cast in-graph; the model alone is fed float32, so the cast counts
    against label_pools); between the two, the local engine's core loop (`local_batches`:
    decode threads feeding that forward, no table), so the gap splits into decoding beside the
    model and the table's own work; and, with Ray installed, the same label_pools with
    `engine="ray"` (Ray Data on a local Ray, 2 CPUs), whose files must be the local engine's
    byte for byte. Each Ray
    call starts its own local Ray and shuts it down, as `pseudolabel label --engine ray` does with
    no address, so Ray's start-up is in its figures and no idle Ray slows the other variants
    (it did on two cores, 2026-12-03). Ratios are given per repetition pair (median and worst).
    Model: EfficientNet-Lite0 at 224 px, real ImageNet weights, batch 64 (the `[pseudo]`
    default); the head is untrained, which changes nothing about speed. Each engine on a single
    batch gives the fixed cost of one call (pipeline set-up, file handling; Ray's start-up), so the
    marginal throughput of large pools can be reported too. Targets: end-to-end / model >= 0.95
    on the median pair, >= 0.85 on the worst; Ray / local >= 0.90 (within 10%) on the median pair.

    `--part engines` times the two engines alone on the whole pool (the model alone, the core
    loop and the one-batch calls left out: at 20k images a pair of calls takes a quarter of an
    hour here). With Ray, `--part labeling` and `--part engines` add up the CPU seconds of each
    process during a whole-pool call (the driver, the model actors, the decode workers, Ray's
    own processes): where Ray's time goes on a machine it shares with the model.

(b) Student training: `NoisyStudent.fit` for K steps from the real input pipeline, built exactly
    as `students.train_student` builds it (labeled + pseudo-labeled batches side by side,
    RandAugment on both, decoded images cached) vs the same compiled train step fed the same
    number of steps from in-memory tensors (a few real, already augmented batches, repeated).
    Both go through `model.fit` (same Keras loop, no callbacks, no validation), after warm-up:
    the train function is traced and the decode caches are full (steady state: every epoch after
    the first). The trainable part follows the experiments' CPU setting (top 3 blocks + head,
    backbone BatchNorm frozen; `--unfreeze-blocks all` trains the whole backbone as the paper
    does). Target: pipeline / in-memory >= 0.95 on the median pair, >= 0.85 on the worst.

(c) Ray's start-up on one machine (`--part ray-startup`): where the fixed cost of a Ray labeling
    goes. Per repetition: `ray.init` of a local Ray (as the Ray engine starts it), then one actor
    doing what a labeling actor does before its first batch (import TensorFlow, load the .keras
    classifier, trace the compiled forward on one batch), each step timed inside the actor, then
    `ray.shutdown`.

Images per second count every image a step trains on (labeled + pseudo-labeled).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import _bench_common as bc

DEFAULT_STUDENT = bc.REPO / "students" / "efficientnet_lite0.toml"
MEDIAN_TARGET, WORST_TARGET = 0.95, 0.85   # issue 17: per repetition pair, both parts
RAY_TARGET = 0.90                          # issue 17: Ray within 10% of the local engine


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=bc.DEFAULT_SPLIT, help="fixed split CSV (student part)")
    p.add_argument("--part", choices=("both", "labeling", "engines", "student", "ray-startup"), default="both",
                   help="engines: the local engine against Ray on the whole pool only")
    p.add_argument("--repeats", "--reps", type=int, default=5, help="repetitions of each variant, alternated")
    g = p.add_argument_group("(a) pseudo-labeling")
    g.add_argument("--backbone", default="efficientnet_lite0", help="teacher backbone (real ImageNet weights)")
    g.add_argument("--model", type=Path, default=None, help="a saved teacher (.keras) instead of a fresh one")
    g.add_argument("--images", type=_sizes, default=[2048],
                   help="pool sizes N, comma-separated (real unlabeled JPEGs; above the 5k the data holds, "
                        "the same files again under other names)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None,
                   help="also time label_pools(engine='ray') on a local Ray (default: when Ray is installed)")
    g = p.add_argument_group("(b) student training")
    g.add_argument("--recipe", type=Path, default=DEFAULT_STUDENT, help="student recipe")
    g.add_argument("--unfreeze-blocks", default="3",
                   help='trainable top blocks ("all": whole backbone); default 3 as the experiments on CPU')
    g.add_argument("--pseudo", type=int, default=796,
                   help="pseudo-labeled images (unlabeled Bedroom images, random soft targets); "
                        "796 = the bedroom-pool experiment's pool")
    g.add_argument("--steps", type=int, default=20, help="train steps per timed repetition")
    bc.add_report_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.pseudo, args.steps = [128], 2, 48, 3
    if args.ray is None:
        import importlib.util

        args.ray = importlib.util.find_spec("ray") is not None
    if args.part == "engines" and not args.ray:
        p.error("--part engines compares the local engine with Ray: it needs Ray installed (and not --no-ray)")
    args.unfreeze_blocks = "all" if args.unfreeze_blocks == "all" else int(args.unfreeze_blocks)
    return args


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of sizes: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"pool sizes must be >= 1: {text!r}")
    return sizes


# =========================================================================== (a) labeling


def bench_pool(paths: list[Path], n: int, folder: Path) -> tuple[list[Path], int]:
    """N pool images from `paths` and how many of them are distinct files. Up to len(paths): every
    k-th (so the pool mixes the rooms); beyond: every file again under another name (symlinks in
    `folder`), as a bigger pool would look to the reader -- same bytes, same decoding cost."""
    if n <= len(paths):
        return paths[::len(paths) // n][:n], n
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        link = folder / f"{i:06d}_{paths[i % len(paths)].name}"
        if not link.exists():
            link.symlink_to(paths[i % len(paths)].resolve())
        out.append(link)
    return out, len(paths)


def bench_labeling(args, workdir: Path) -> list[dict]:
    """One result per pool size in `args.images`, all with the same teacher (and the same Ray);
    `--part engines` times the two engines only."""
    from pseudolabel import data

    workdir.mkdir(parents=True, exist_ok=True)
    class_names = list(data.HOUSE_ROOMS_CLASSES.names)
    model, model_text = _teacher(args, len(class_names))
    model_file = workdir / "teacher.keras"
    model.save(model_file)  # what the Ray actors load
    paths = bc.unlabeled_images(args.data)
    bench_size = bench_engines_size if args.part == "engines" else bench_labeling_size
    return [bench_size(args, n, paths, workdir / f"n{n}", model=model, model_text=model_text,
                       model_file=model_file, class_names=class_names) for n in args.images]


class LabelingCalls:
    """`label_pools` calls on one pool as the timed variants make them. Each whole-pool call keeps
    its table (`tables[engine]`, to compare the engines' files) and is sampled (`sampled[engine]`:
    peak memory and CPU seconds by process)."""

    def __init__(self, model, paths: list[Path], root: Path, workdir: Path, *, batch_size: int, model_file: Path,
                 class_names: list[str]):
        from pseudolabel import data

        self.model, self.workdir, self.model_file, self.class_names = model, workdir, model_file, class_names
        self.batch_size, self.image_size = batch_size, int(model.input_shape[1])
        self.pool, self.one_batch = data.Pool("bench", root, paths), data.Pool("bench", root, paths[:batch_size])
        self.tables = {"local": [], "ray": []}
        self.sampled = {"local": bc.MemorySampler(), "ray": bc.MemorySampler()}
        self._counter = iter(range(10**6))

    def variant(self, engine: str = "local", *, whole: bool = True):
        """A variant for `bc.alternate`: label the whole pool (else its first batch) with `engine`."""
        from pseudolabel import pseudolabels

        def run():
            out = self.workdir / engine / f"t{next(self._counter)}" / "pseudo.csv"
            with self.sampled[engine] if whole else contextlib.nullcontext():
                pseudolabels.label_pools(self.model, [self.pool if whole else self.one_batch],
                                         image_size=self.image_size, batch_size=self.batch_size,
                                         class_names=self.class_names, out_path=out, progress=False, engine=engine,
                                         model_file=self.model_file)
            if whole:
                self.tables[engine].append(out)
        return run

    def warm_up(self) -> None:
        """Without labeling the whole pool once more per variant (at 20k images that alone is most
        of an hour here): every file read once (the OS page cache, as a second pass finds it), then
        the local engine on one batch (the forward traced)."""
        bc.log(f"(a) {len(self.pool.images)} images: warming up (reading the files once; label_pools on one batch)")
        for path in self.pool.images:
            path.read_bytes()
        self.variant(whole=False)()


def bench_labeling_size(args, n: int, all_paths: list[Path], workdir: Path, *, model, model_text: str,
                        model_file: Path, class_names: list[str]) -> dict:
    from pseudolabel import pseudolabels

    paths, distinct_files = bench_pool(all_paths, n, workdir / "pool")
    bs, size = args.batch_size, int(model.input_shape[1])
    calls = LabelingCalls(model, paths, args.data if distinct_files == n else paths[0].parent, workdir,
                          batch_size=bs, model_file=model_file, class_names=class_names)

    # The model alone: the float32 forward inside the compiled forward label_pools uses (it feeds
    # uint8, cast in-graph), on in-memory batches.
    forward = pseudolabels.batch_predictor(model, "none", size)
    predict = forward.float_forward
    batches = _memory_batches(paths, bs, size)

    def model_only():
        for x in batches:
            predict(x).numpy()

    def core_loop():
        # The local engine without its table: decode threads feeding the forward (`local_batches`).
        for _ in pseudolabels.local_batches(paths, image_size=size, batch_size=bs, predict=forward,
                                            num_classes=len(class_names)):
            pass

    variants = {"label_pools": calls.variant(), "core_loop": core_loop,
                "label_pools_one_batch": calls.variant(whole=False), "model_only": model_only}
    if args.ray:
        # As `pseudolabel label --engine ray` runs with no address: every call starts its own local
        # Ray and shuts it down, so its start-up counts and no idle Ray slows the other variants
        # (on two cores an idle local Ray slowed the local engine by a fifth, 2026-12-03).
        variants.update(ray=calls.variant("ray"), ray_one_batch=calls.variant("ray", whole=False))
    calls.warm_up()
    predict(batches[0]).numpy()
    bc.log(f"(a) timing: {', '.join(variants)} on {n} images ({bs} for one batch); {args.repeats} repetitions "
           "each, alternated")
    times = bc.alternate(variants, args.repeats)
    rows = pseudolabels.read_pseudo_labels(calls.tables["local"][-1])
    assert len(rows) == n, f"the table has {len(rows)} rows for {n} images"
    t_model = bc.median(times["model_only"])
    result = {
        "n": n, "distinct_files": distinct_files, "batch_size": bs, "image_size": size, "model": model_text,
        "times": times, "rate_model": n / t_model,
        "local": _engine_rates(times, "label_pools", "label_pools_one_batch", n, bs, t_model),
        "traces": forward.experimental_get_tracing_count(), "driver_mb": calls.sampled["local"].driver_mb,
        "cpu_local": cpu_by_kind(calls.sampled["local"]),
        "pair_ratios": [m / a for a, m in zip(times["label_pools"], times["model_only"])],
        "core_pair_ratios": [m / c for c, m in zip(times["core_loop"], times["model_only"])],
        "table_pair_ratios": [c / a for a, c in zip(times["label_pools"], times["core_loop"])],
    }
    if args.ray:
        result.update(ray=_engine_rates(times, "ray", "ray_one_batch", n, bs, t_model), **_ray_figures(calls, times))
    return result


def bench_engines_size(args, n: int, all_paths: list[Path], workdir: Path, *, model, model_text: str,
                       model_file: Path, class_names: list[str]) -> dict:
    """`--part engines`: the local engine against Ray on the whole pool, nothing else (at 20k
    images one pair of them takes a quarter of an hour here)."""
    paths, distinct_files = bench_pool(all_paths, n, workdir / "pool")
    calls = LabelingCalls(model, paths, args.data if distinct_files == n else paths[0].parent, workdir,
                          batch_size=args.batch_size, model_file=model_file, class_names=class_names)
    calls.warm_up()
    bc.log(f"(a) timing the local engine and Ray on {n} images; {args.repeats} repetitions each, alternated")
    times = bc.alternate({"label_pools": calls.variant(), "ray": calls.variant("ray")}, args.repeats)
    return {"n": n, "distinct_files": distinct_files, "batch_size": args.batch_size, "image_size": calls.image_size,
            "model": model_text, "times": times, "driver_mb": calls.sampled["local"].driver_mb,
            "cpu_local": cpu_by_kind(calls.sampled["local"]), **_ray_figures(calls, times)}


def _ray_figures(calls: LabelingCalls, times: dict) -> dict:
    """Ray against the local engine: per-pair ratios, the same files, memory and CPU by process."""
    ray = calls.sampled["ray"]
    return {"ray_pair_ratios": [a / r for a, r in zip(times["label_pools"], times["ray"])],
            "same_files": _same_files(calls.tables["local"][-1], calls.tables["ray"][-1]),
            "ray_driver_mb": ray.driver_mb, "ray_worker_mb": ray.worker_mb, "ray_all_mb": ray.descendants_mb,
            "cpu_ray": cpu_by_kind(ray)}


def cpu_by_kind(sampled: bc.MemorySampler) -> dict[str, float]:
    """CPU seconds per whole-pool call, by what the process does: the driver (for the local engine
    all of its work: decode threads, model, table), Ray's model-holding actors, the workers that
    ran the decode tasks (a worker Ray left idle counts here too), and Ray's own processes (raylet,
    GCS, Ray Data's helper actors, dashboard agent, log monitor ...)."""
    kinds = {"driver": 0.0, "model actors": 0.0, "decode workers": 0.0, "Ray's own processes": 0.0}
    for title, seconds in sampled.cpu_s.items():
        if title == "driver":
            kind = "driver"
        elif title.startswith("ray::MapWorker"):
            kind = "model actors"
        elif title.startswith("ray::Map(") or title in ("ray::IDLE", "default_worker.py"):
            kind = "decode workers"
        else:
            kind = "Ray's own processes"
        kinds[kind] += seconds / max(sampled.entries, 1)
    return kinds


def _memory_batches(paths: list[Path], bs: int, size: int) -> list:
    """float32 batches of the sizes label_pools cuts `paths` into: up to 4 distinct real batches,
    decoded once here (outside the timing) and cycled."""
    import numpy as np
    import tensorflow as tf

    from pseudolabel.pipeline import load_images
    from pseudolabel.pseudolabels import batch_starts

    n, starts = len(paths), batch_starts(len(paths), bs)
    distinct = [tf.constant(load_images(paths[i:i + bs], size).astype(np.float32)) for i in starts[:4]]
    return [distinct[k % len(distinct)][:min(bs, n - i)] for k, i in enumerate(starts)]


def _engine_rates(times: dict, whole: str, one_batch: str, n: int, bs: int, t_model: float) -> dict:
    """An engine's rate on the whole pool, and split into a fixed cost per call and a marginal
    rate (from the median times of the whole pool and of one batch)."""
    t_all, t_one = bc.median(times[whole]), bc.median(times[one_batch])
    marginal = (n - bs) / (t_all - t_one) if n > bs and t_all > t_one else float("nan")
    return {"rate": n / t_all, "ratio": t_model / t_all, "rate_marginal": marginal,
            "ratio_marginal": marginal * t_model / n,
            "fixed_s": t_one - bs / marginal if marginal == marginal else float("nan")}


def _same_files(local, ray) -> str:
    """Whether the two engines' table, skipped list and summary are the same bytes (the summary
    names its own table path, which differs here, and nothing else)."""
    import json

    from pseudolabel.pseudolabels import sidecar

    same_table = all(sidecar(local, k).read_bytes() == sidecar(ray, k).read_bytes() for k in ("skipped",))
    same_table = same_table and local.read_bytes() == ray.read_bytes()
    summaries = [json.loads(sidecar(p, "summary").read_text()) for p in (local, ray)]
    for summary in summaries:
        summary.pop("table")
    return "yes" if same_table and summaries[0] == summaries[1] else "NO"


def _pairs(ratios) -> str:
    """Median and worst of per-repetition ratios, then all of them."""
    return (f"median **{bc.median(ratios):.2f}**, worst **{min(ratios):.2f}** "
            f"(per repetition pair: {', '.join(f'{x:.2f}' for x in ratios)})")


def _goal(ratios) -> str:
    met = bc.median(ratios) >= MEDIAN_TARGET and min(ratios) >= WORST_TARGET
    return f"target >= {MEDIAN_TARGET} median, >= {WORST_TARGET} worst: **{'met' if met else 'missed'}**"


def _teacher(args, num_classes: int):
    if args.model is not None:
        import keras

        return keras.models.load_model(args.model, compile=False), f"`{args.model}`"
    from pseudolabel.backbones import create_model

    model = create_model(args.backbone, num_classes)
    return model, f"{args.backbone} (ImageNet weights, untrained head)"


def labeling_section(r: dict) -> list[str]:
    t, ray = r["times"], r.get("ray")
    rows = [("`label_pools`: files -> decode -> model -> table", r["n"], "label_pools", f"{r['local']['rate']:.1f}")]
    if ray:
        rows += [("`label_pools(engine=\"ray\")`: Ray Data on a local Ray (2 CPUs) it starts and shuts down",
                  r["n"], "ray", f"{ray['rate']:.1f}")]
    rows += [("core loop: `local_batches` (decode threads -> model), no table", r["n"], "core_loop",
              f"{r['n'] / bc.median(t['core_loop']):.1f}"),
             ("model only: the same compiled forward on in-memory float32 batches", r["n"], "model_only",
              f"{r['rate_model']:.1f}"),
             ("`label_pools` on one batch (fixed cost of a call)", r["batch_size"], "label_pools_one_batch", "-")]
    if ray:
        rows += [("`label_pools(engine=\"ray\")` on one batch (Ray's start-up included)", r["batch_size"],
                  "ray_one_batch", "-")]
    lines = [
        f"### (a) Pseudo-labeling: JPEG files -> written table vs the model alone "
        f"({r['model']}, {r['image_size']} px, batch {r['batch_size']})",
        "",
        "| variant | images | time: median (min-max) | images/s |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {images} | {bc.spread(t[key])} | {rate} |" for name, images, key, rate in rows),
        "",
        f"- Local engine / model only: {_pairs(r['pair_ratios'])}; {_goal(r['pair_ratios'])}",
        f"- Where the difference lies: core loop / model only {_pairs(r['core_pair_ratios'])}; "
        f"`label_pools` / core loop (the table, skipped list, summary, manifest and read-back) "
        f"{_pairs(r['table_pair_ratios'])}",
        f"- {_marginal_line('the local engine', r['local'])}; the compiled forward was traced {r['traces']} "
        "time(s) over every call",
    ]
    if ray:
        lines += [*_ray_lines(r), f"- {_marginal_line('Ray', ray)}; Ray's marginal rate / the local engine's: "
                  f"**{ray['rate_marginal'] / r['local']['rate_marginal']:.2f}**"]
    return lines + _memory_lines(r) + [""]


def engines_section(r: dict) -> list[str]:
    """`--part engines`: the two engines on the whole pool."""
    t = r["times"]
    return [
        f"### (a) Pseudo-labeling, the local engine vs Ray on one machine "
        f"({r['model']}, {r['image_size']} px, batch {r['batch_size']})",
        "",
        "| variant | images | time: median (min-max) | images/s |",
        "| --- | --- | --- | --- |",
        f"| `label_pools`, local engine | {r['n']} | {bc.spread(t['label_pools'])} | "
        f"{r['n'] / bc.median(t['label_pools']):.1f} |",
        f"| `label_pools(engine=\"ray\")`: Ray Data on a local Ray (2 CPUs) it starts and shuts down | {r['n']} | "
        f"{bc.spread(t['ray'])} | {r['n'] / bc.median(t['ray']):.1f} |",
        "",
        *_ray_lines(r),
        *_memory_lines(r),
        "",
    ]


def _ray_lines(r: dict) -> list[str]:
    """Ray against the local engine: the ratio and its goal, the files, and where the CPU went."""
    within = bc.median(r["ray_pair_ratios"]) >= RAY_TARGET
    cpu_local, cpu_ray = r["cpu_local"], r["cpu_ray"]
    return [f"- Ray / local engine: {_pairs(r['ray_pair_ratios'])}; within {1 - RAY_TARGET:.0%} of the "
            f"local engine (median pair >= {RAY_TARGET}): **{'met' if within else 'missed'}**; the same "
            f"table, skipped list and summary byte for byte: **{r['same_files']}**",
            f"- CPU seconds of a whole-pool call (mean over calls, from /proc every 0.2 s): the local engine "
            f"{sum(cpu_local.values()):.0f} s ({_cpu_parts(cpu_local)}); Ray {sum(cpu_ray.values()):.0f} s "
            f"({_cpu_parts(cpu_ray)}). Two cores give 2 CPU seconds a second to share between these processes."]


def _cpu_parts(cpu: dict) -> str:
    return ", ".join(f"{kind} {seconds:.0f}" for kind, seconds in cpu.items() if seconds >= 0.5) or "none measured"


def _memory_lines(r: dict) -> list[str]:
    ray = "ray_driver_mb" in r
    return [
        f"- Peak memory, sampled every 0.2 s during the timed runs: the driver, labeling with the local engine, "
        f"{r['driver_mb']:.0f} MB"
        + (f"; with Ray, the driver {r['ray_driver_mb']:.0f} MB, the largest Ray process (a worker) "
           f"{r['ray_worker_mb']:.0f} MB, all of Ray's processes together {r['ray_all_mb']:.0f} MB" if ray else ""),
        *([f"- {r['n']} images are {r['distinct_files']} distinct JPEGs, each again under other names (symlinks): "
           "the same bytes to read and decode as a pool that large"] if r["distinct_files"] < r["n"] else []),
        f"- The {r['n']} JPEGs are in the OS page cache after the first repetition (reading from a cold disk is "
        f"`bench_scale.py`'s business); the table's sha256 column is hashed from the bytes read for decoding.",
    ]


def _marginal_line(engine: str, rates: dict) -> str:
    return (f"Marginal rate of {engine} on large pools (fixed per-call cost removed): {rates['rate_marginal']:.1f} "
            f"images/s, **{rates['ratio_marginal']:.2f}** of the model alone; fixed cost of one call about "
            f"{rates['fixed_s']:.1f} s")


# =========================================================================== (b) student training


def bench_student(args, workdir: Path) -> dict:
    import tensorflow as tf

    task, split_source = bc.load_house_rooms(args.data, args.split)
    pseudo_paths = bc.unlabeled_images(args.data, rooms=("Bedroom",), limit=args.pseudo)
    targets = bc.soft_targets(len(pseudo_paths), len(task.class_map.names))
    s = bc.student_setup(args.recipe, task, pseudo_paths, targets, workdir / "student",
                         overrides={"train": {"unfreeze_blocks": args.unfreeze_blocks}})
    plan, model = s.plan, s.model
    per_step = plan["labeled_batch"] + plan["unlabeled_batch"]
    bc.log(f"(b) {bc.describe_student(s)}")

    bc.log(f"(b) warming up: one epoch of data ({plan['steps_per_epoch']} steps) fills the decode caches")
    started = time.perf_counter()
    for _ in s.train_ds.take(plan["steps_per_epoch"]):
        pass
    fill_s = time.perf_counter() - started
    # In memory: a few real (already augmented) batches of the same pipeline, stacked and repeated.
    held = list(s.train_ds.take(4))
    stacked = tf.nest.map_structure(lambda *xs: tf.stack(xs), *held)
    # The pipeline's options too: with tf.data's autotuner on, releasing each repetition's iterator
    # waited for the autotuner's next tick, which made both variants' times jump by seconds.
    memory_ds = tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2).with_options(s.train_ds.options())
    bc.log("(b) warming up: tracing the train step")
    started = time.perf_counter()
    model.fit(s.train_ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    trace_s = time.perf_counter() - started
    model.fit(memory_ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)

    def fit(ds):
        return lambda: model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)

    bc.log(f"(b) timing: {args.steps} steps from the pipeline vs from memory, {args.repeats} repetitions each")
    times = bc.alternate({"pipeline": fit(s.train_ds), "in_memory": fit(memory_ds)}, args.repeats)
    n = args.steps * per_step
    t_pipe, t_mem = bc.median(times["pipeline"]), bc.median(times["in_memory"])
    return {
        "setup": bc.describe_student(s), "recipe": args.recipe, "split": split_source, "plan": plan,
        "steps": args.steps, "images": n, "times": times, "fill_s": fill_s, "trace_s": trace_s,
        "rate_pipeline": n / t_pipe, "rate_model": n / t_mem, "ratio": t_mem / t_pipe,
        "pair_ratios": [m / p for p, m in zip(times["pipeline"], times["in_memory"])],
    }


def student_section(r: dict) -> list[str]:
    t, plan = r["times"], r["plan"]
    return [
        "### (b) Student training: input pipeline with augmentation vs in-memory batches",
        "",
        f"Student `{Path(r['recipe']).name}`: {r['setup']}. Labeled: the train split ({plan['n_labeled']} images); "
        f"pseudo-labeled: {plan['n_pseudo']} unlabeled Bedroom images with random soft targets; "
        f"{plan['steps_per_epoch']} steps make an epoch.",
        "",
        "| variant | steps | time: median (min-max) | images/s |",
        "| --- | --- | --- | --- |",
        f"| `fit` from the real pipeline (cached decode + RandAugment, zipped streams) | {r['steps']} "
        f"| {bc.spread(t['pipeline'])} | {r['rate_pipeline']:.1f} |",
        f"| `fit` from in-memory tensors (same train step) | {r['steps']} | {bc.spread(t['in_memory'])} "
        f"| {r['rate_model']:.1f} |",
        "",
        f"- Pipeline / in memory: {_pairs(r['pair_ratios'])}; ratio of the medians {r['ratio']:.2f}; "
        f"{_goal(r['pair_ratios'])}",
        f"- Each repetition is one `fit` call, so its iterator starts with an empty prefetch buffer (once per "
        f"{r['steps']} steps; a training's iterator lives across epochs).",
        f"- Not timed: the first epoch's decoding (one pass of the data alone took {r['fill_s']:.1f} s) and "
        f"tracing the train step ({r['trace_s']:.1f} s for the first step).",
        "",
    ]


# =========================================================================== (c) Ray's start-up

STARTUP_STEPS = {"init": "`ray.init`: a local Ray on 2 CPUs (GCS, raylet, prestarted workers)",
                 "actor_start": "an actor process scheduled and started",
                 "import_tf": "the actor imports TensorFlow",
                 "load": "the actor loads the classifier (.keras)",
                 "first_forward": "the actor's first forward on one batch (tracing included)",
                 "shutdown": "`ray.shutdown`"}


def bench_ray_startup(args, workdir: Path) -> dict:
    """Each start-up step of a Ray labeling, timed per repetition (section (c) of the docstring)."""
    from pseudolabel import data
    from pseudolabel.pseudolabels import ray_engine

    workdir.mkdir(parents=True, exist_ok=True)
    model, model_text = _teacher(args, len(data.HOUSE_ROOMS_CLASSES.names))
    model_file = workdir / "teacher.keras"
    model.save(model_file)
    size, times = int(model.input_shape[1]), {k: [] for k in STARTUP_STEPS}
    for rep in range(args.repeats):
        bc.log(f"(c) Ray start-up, repetition {rep + 1} of {args.repeats}")
        started = time.perf_counter()
        ray = ray_engine.connect()
        times["init"].append(time.perf_counter() - started)
        started = time.time()  # wall clock: compared with the actor's own clock
        actor = ray.remote(num_cpus=1)(_StartupProbe).remote(str(model_file), size, args.batch_size)
        steps = ray.get(actor.steps.remote())
        times["actor_start"].append(steps.pop("created") - started)
        for key, value in steps.items():
            times[key].append(value)
        started = time.perf_counter()
        ray.shutdown()
        times["shutdown"].append(time.perf_counter() - started)
    return {"times": times, "model": model_text, "image_size": size, "batch_size": args.batch_size}


class _StartupProbe:
    """A Ray actor doing, and timing, what a labeling actor does before its first batch."""

    def __init__(self, model_file: str, image_size: int, batch_size: int):
        self.timings = {"created": time.time()}
        started = time.perf_counter()
        import numpy as np
        import tensorflow  # noqa: F401

        self.timings["import_tf"] = time.perf_counter() - started
        from pseudolabel import quiet
        from pseudolabel.pseudolabels.predict import batch_predictor, load_classifier

        quiet.set_library_defaults()
        started = time.perf_counter()
        model, _, _ = load_classifier(model_file)
        self.timings["load"] = time.perf_counter() - started
        started = time.perf_counter()
        batch_predictor(model, "none", image_size)(np.zeros((batch_size, image_size, image_size, 3), np.uint8))
        self.timings["first_forward"] = time.perf_counter() - started

    def steps(self) -> dict:
        return self.timings


def ray_startup_section(r: dict) -> list[str]:
    t = r["times"]
    before = {k: bc.median(t[k]) for k in STARTUP_STEPS if k != "shutdown"}
    ray_only = before["init"] + before["actor_start"] + before["import_tf"]
    return [
        f"### (c) Ray's start-up on one machine ({r['model']}, {r['image_size']} px, batch {r['batch_size']})",
        "",
        "| step | time: median (min-max) |",
        "| --- | --- |",
        *(f"| {name} | {bc.spread(t[key])} |" for key, name in STARTUP_STEPS.items()),
        "",
        f"- Before Ray's first batch (every step but the shutdown, medians summed): **{sum(before.values()):.1f} s**.",
        f"- Of these, a labeling in a fresh process with the local engine pays the load and the first forward too "
        f"(in its own process); Ray alone adds `ray.init`, the actor's start and its TensorFlow import: "
        f"**{ray_only:.1f} s** a labeling on a Ray it starts itself (joining a running cluster with `--address` "
        "saves the `ray.init`, not the rest).",
        "",
    ]


# =========================================================================== main


def main(argv=None):
    args = parse_args(argv)
    command, machine_text = bc.command_line(), bc.machine()
    started = time.perf_counter()
    import tensorflow as tf

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        if args.part in ("both", "labeling", "engines"):
            results["labeling"] = bench_labeling(args, Path(tmp) / "labeling")
        if args.part in ("both", "student"):
            results["student"] = bench_student(args, Path(tmp))
        if args.part == "ray-startup":
            results["ray_startup"] = bench_ray_startup(args, Path(tmp) / "ray_startup")
    lines = bc.section_head(
        "Input pipeline vs model benchmark" + (" (QUICK, not results)" if args.quick else ""), command, machine_text,
        f"Data: {args.data}; TensorFlow {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} "
        f"intra-op threads; {args.repeats} repetitions of each variant, alternated in a balanced order "
        f"(A B, B A, ...); whole script {(time.perf_counter() - started) / 60:.1f} min",
    )
    lines += bc.quick_note(args.quick)
    for result in results.get("labeling", []):
        lines += engines_section(result) if args.part == "engines" else labeling_section(result)
    if "student" in results:
        lines += student_section(results["student"])
    if "ray_startup" in results:
        lines += ray_startup_section(results["ray_startup"])
    section = "\n".join(lines)
    bc.publish(args.report, section)


if __name__ == "__main__":
    main()
