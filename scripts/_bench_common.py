"""Shared helpers of the `scripts/bench_*.py` benchmarks (not part of the package).

What every benchmark needs: where the data lies, the House Rooms task on the fixed split, a
description of the machine, the exact command line, alternating timings (A B, B A, ...), RSS readings,
"target met / missed" lines and appending a section to BENCHMARKS.md (or `--out FILE`).

The scripts import it as `import _bench_common` (Python puts the script's own folder,
`scripts/`, first on sys.path); importing it also puts the checkout first, so the package of
this checkout is the one measured.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The package's environment defaults (oneDNN on, no TensorFlow banners) before a script imports
# TensorFlow itself: the benchmarks measure what a user of the package gets.
import pseudolabel  # noqa: E402,F401

DEFAULT_DATA = REPO.parent / "shared" / "data" / "house_rooms"
DEFAULT_SPLIT = REPO / "splits" / "house_rooms.csv"
DEFAULT_REPORT = REPO / "BENCHMARKS.md"
ROOMS = ("Bathroom", "Bedroom", "Dinning", "Kitchen", "Livingroom")
REPORT_HEAD = "# Benchmarks\n\nMeasured figures, newest last. Each section says how to reproduce it.\n"


# --------------------------------------------------------------------------- the run itself


def machine() -> str:
    """CPU model, usable cores, OS, and the load average now (call it at the start of a run)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return (f"{model}, {cores} cores usable, {platform.system()} {platform.release()}; TF_ENABLE_ONEDNN_OPTS={onednn}; "
            f"load average at start {load}")


def command_line(argv: Sequence[str] | None = None) -> str:
    """`python scripts/NAME.py ARGS...` as it was run, relative to the checkout, shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(argv[0], REPO), *argv[1:]])


def timestamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def section_head(title: str, command: str, machine_text: str, *details: str) -> list[str]:
    """`## title (date)`, then the command, the machine and any further `- ...` lines."""
    return [f"## {title} ({timestamp()})", "", f"- Command: `{command}`", f"- Machine: {machine_text}",
            *(f"- {d}" for d in details), ""]


class RunHead:
    """The head of a benchmark's section, started with the run: command line, machine (load
    average at the start) and the whole script's minutes; "(QUICK, not results)" when quick."""

    def __init__(self, title: str, quick: bool = False):
        self.title, self.quick = title, quick
        self.command, self.machine, self.started = command_line(), machine(), time.perf_counter()

    def lines(self, *details: str) -> list[str]:
        minutes = (time.perf_counter() - self.started) / 60
        return [*section_head(self.title + (" (QUICK, not results)" if self.quick else ""), self.command, self.machine,
                              *details, f"Whole script {minutes:.1f} min"), *quick_note(self.quick)]


def append_report(path: Path, section: str) -> None:
    """Append `section` to the Markdown report at `path` (created with the usual head), atomically."""
    from pseudolabel.rundir import atomic_write_text

    path = Path(path)
    head = path.read_text() if path.exists() else REPORT_HEAD
    atomic_write_text(path, head.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n")


def publish(path: Path, section: str) -> None:
    """Append `section` to the report at `path` and print it, saying where it went."""
    append_report(path, section)
    print("\n" + section)
    print(f"appended to {path}")


def display(path: Path) -> str:
    """`path` relative to the checkout when it lies inside it (for report lines), else as given."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def replace_section(path: Path, title: str, text: str) -> None:
    """Put `text` in place of the section of BENCHMARKS.md whose heading starts with `## title (`,
    or append it when there is none."""
    from pseudolabel.rundir import atomic_write_text

    current = path.read_text() if path.exists() else REPORT_HEAD
    head = f"## {title} ("
    start = current.find(head)
    if start < 0:
        append_report(path, text)
        return
    end = current.find("\n## ", start + 1)
    rest = "" if end < 0 else current[end + 1:]
    atomic_write_text(path, current[:start] + text.rstrip("\n") + "\n\n" + rest)


def add_report_args(parser, default_report: Path = DEFAULT_REPORT) -> None:
    """`--out FILE` (the Markdown file the section is appended to) and `--quick`."""
    parser.add_argument("--out", dest="report", type=Path, default=default_report,
                        help=f"Markdown file the section is appended to (default {default_report.name}); "
                             "use a scratch file for trial runs")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a minute or so): checks that the script works; the figures mean nothing")


def quick_note(quick: bool) -> list[str]:
    if not quick:
        return []
    return ["**QUICK MODE (`--quick`): tiny sizes to check the script runs; these figures are not results.**", ""]


def verdict(value: float, target: float, *, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    sign = ">=" if at_least else "<="
    return f"target {sign} {target:g}: **{'met' if ok else 'missed'}** ({value:.3g})"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- timing and memory


def alternate(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run the callables in turn, `repeats` times each, in a balanced order: A B C, then C B A,
    then A B C ...; wall seconds of every run.

    Alternating spreads slow drift (thermal, other processes, caches) over all variants alike;
    reversing the order every other repetition also cancels a steady drift within each pair
    of repetitions, where A B A B ... put B always after A (on these machines the same variant
    moved 10-20% between repetitions, 2026-12-07).
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
            log(f"  {name} repetition {r + 1}/{repeats}: {times[name][-1]:.2f} s")
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """`median (min-max)` of seconds, for tables."""
    return f"{median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    return _rss_mb(os.getpid()) or peak_rss_mb()


# --------------------------------------------------------------------------- data


def load_house_rooms(root: Path, split_csv: Path):
    """The Modern vs not-Modern task on the fixed split: (task, where the split came from).

    `task` has what training and evaluation read: root, class_map, split, labeled.
    """
    from pseudolabel import data

    class_map = data.HOUSE_ROOMS_CLASSES
    labeled = data.read_labels_csv(root / "labels.csv", class_map=class_map)
    if split_csv.exists():
        split = data.read_split(split_csv, root, class_map=class_map)
        split_source = str(split_csv)
    else:
        split = data.make_split(labeled, class_map, seed=0)
        split_source = "data.make_split(seed=0)"
    return SimpleNamespace(root=root, class_map=class_map, split=split, labeled=labeled), split_source


def unlabeled_images(root: Path, rooms: Sequence[str] = ROOMS, limit: int | None = None) -> list[Path]:
    """Real images of the room folders that are not in labels.csv, sorted (room by room).

    No near-duplicate filtering (`data.filter_pool`): for throughput it makes no difference.
    """
    from pseudolabel import data

    labeled = {(root / image).resolve()
               for image, _ in data.read_labels_csv(root / "labels.csv", check_images=False).items}
    out: list[Path] = []
    for room in rooms:
        out += [p for p in data.scan_pool(root / room).images if p.resolve() not in labeled]
    return out[:limit] if limit is not None else out


def soft_targets(n: int, num_classes: int, seed: int = 0):
    """Random soft pseudo-label targets `[n, K]` (Dirichlet): what the student trains on does not
    change how fast it trains, so benchmarks need no teacher."""
    import numpy as np

    return np.random.default_rng(seed).dirichlet(np.ones(num_classes), size=n).astype(np.float32)


# --------------------------------------------------------------------------- the student, as train_student builds it


def student_setup(recipe_path: Path, task, pseudo_paths, pseudo_targets, run_dir: Path, *,
                  overrides: dict | None = None):
    """A compiled `NoisyStudent` with the train/val datasets `students.train_student` would use:
    `StudentRun.build` and `StudentRun.training_setup`, the very steps of its `fit` up to
    `model.fit`. Only the run-directory bookkeeping and the selection of pseudo-labels (the
    benchmark brings its own) are left out."""
    import keras

    from pseudolabel.config import load_recipe
    from pseudolabel.students import StudentRun

    recipe = load_recipe(recipe_path, "student", overrides)
    run = StudentRun(recipe, task, run_dir, table=run_dir / "unused.csv", verbose=2)
    keras.utils.set_random_seed(recipe.train.seed)
    student = run.build()
    setup = run.training_setup(student, list(map(str, pseudo_paths)), pseudo_targets)
    trainable = sum(int(w.numpy().size) for w in student.trainable_weights)
    return SimpleNamespace(recipe=recipe, model=setup.model, student=student, image_size=run.image_size,
                           plan=setup.plan, train_ds=setup.train_ds, val_ds=setup.val_ds, cache=run.cache,
                           trainable_params=trainable, unfreeze_blocks=recipe.train.unfreeze_blocks,
                           noise=recipe.noise)


def describe_student(s) -> str:
    n = s.noise
    noise = n.augment if n.augment != "randaugment" else (
        f"randaugment ({n.randaugment_ops} ops, magnitude {n.randaugment_magnitude:g})")
    blocks = "whole backbone" if s.unfreeze_blocks == "all" else f"top {s.unfreeze_blocks} blocks + head"
    return (f"{s.recipe.model.backbone} at {s.image_size} px, {blocks} trainable "
            f"({s.trainable_params / 1e6:.2f}M parameters), backbone BatchNorm "
            f"{'frozen' if s.recipe.train.freeze_bn else 'training'}; batches "
            f"{s.plan['labeled_batch']} labeled + {s.plan['unlabeled_batch']} pseudo-labeled; noise {noise}")


class MemorySampler:
    """Peak resident memory while in the `with` block, sampled every `interval` seconds from a
    thread (Linux /proc; elsewhere nothing is sampled and the peaks stay 0): of this process
    (`driver_mb`), of the largest descendant (`worker_mb`: a Ray worker or Ray's own services) and
    of all descendants together (`descendants_mb`). One sampler can be entered several times;
    the peaks are over all of them.

    It also adds up the CPU seconds each process spent in the block (`cpu_s`, keyed by "driver"
    for this process, else by what `_title` says the process is: the title Ray gives a worker,
    e.g. "ray::MapWorker(...)", or the script a Python process runs), summed over every entry
    (`entries`).
    A process that ends between two samples loses at most its last `interval`."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.driver_mb = self.worker_mb = self.descendants_mb = 0.0
        self.cpu_s: dict[str, float] = {}
        self.entries = 0

    def __enter__(self):
        import threading

        self.entries += 1
        # CPU already spent before the block is not the block's; a process born inside starts at 0.
        self._cpu_at_entry = {pid: _cpu_s(pid) for pid in [os.getpid(), *_descendants(os.getpid())]}
        self._cpu_last: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        for pid, (cpu, title) in self._cpu_last.items():
            spent = cpu - self._cpu_at_entry.get(pid, 0.0)
            self.cpu_s[title] = self.cpu_s.get(title, 0.0) + max(spent, 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        children = _descendants(os.getpid())
        rss = [_rss_mb(pid) for pid in children]
        self.driver_mb = max(self.driver_mb, _rss_mb(os.getpid()))
        self.worker_mb = max(self.worker_mb, max(rss, default=0.0))
        self.descendants_mb = max(self.descendants_mb, sum(rss))
        for pid in [os.getpid(), *children]:
            cpu, title = _cpu_s(pid), "driver" if pid == os.getpid() else _title(pid)
            if title:   # a pid that ended meanwhile keeps its last reading
                self._cpu_last[pid] = (max(cpu, self._cpu_last.get(pid, (0.0, ""))[0]), title)


def _descendants(root: int) -> list[int]:
    """Every process below `root` (children, their children, ...), from /proc/*/stat."""
    parent_of = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue   # ended meanwhile
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, parent in parent_of.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (in parentheses, which may hold spaces): the state
    is field 0, the parent 1, user and system CPU ticks 11 and 12."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_s(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _title(pid: int) -> str:
    """What the process is ("" if it ended): the first word of its command line without its
    folder (Ray sets it to what a worker runs, e.g. "ray::IDLE"), or for a Python interpreter the
    script it runs (e.g. "log_monitor.py")."""
    try:
        words = [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
    except OSError:
        return ""
    if not words:
        return ""
    first = words[0].split(" ")[0]   # a title Ray set may hold spaces in one word
    name = first if first.startswith("ray::") else Path(first).name
    if not name.startswith("python") or len(words) < 2:
        return name
    if words[1] == "-c":
        return f"{name} -c"
    if words[1] == "-m" and len(words) > 2:
        return f"{name} -m {words[2]}"
    script = next((w for w in words[1:] if not w.startswith("-")), None)
    return Path(script).name if script else name


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
