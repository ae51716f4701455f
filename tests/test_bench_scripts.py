"""The benchmark scripts (scripts/bench_*.py, profile_student.py): helpers, and that they run.

No timing is asserted anywhere: the figures belong in BENCHMARKS.md, measured on a quiet machine.
The `--quick` runs (real data and weights, about a minute each) are marked slow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHES = ["bench_pipeline.py", "bench_tutorial.py", "bench_scale.py", "profile_student.py", "bench_teacher.py",
           "bench_near_duplicates.py", "seed_benchmark.py", "select_teacher_recipe.py", "bench_algorithms.py",
           "bench_autotune.py", "bench_selection.py", "bench_onednn.py"]
sys.path.insert(0, str(SCRIPTS))

import _bench_common as bc  # noqa: E402


def test_alternate_runs_variants_in_turn_in_a_balanced_order():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = bc.alternate(runs, repeats=3)
    assert calls == list("abc" "cba" "abc")
    assert set(times) == set("abc") and all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_verdict_and_report(tmp_path):
    assert "**met**" in bc.verdict(0.95, 0.9) and "**missed**" in bc.verdict(0.5, 0.9)
    assert "**met**" in bc.verdict(0.05, 0.1, at_least=False)
    report = tmp_path / "bench.md"
    bc.append_report(report, "## one\n\nx\n")
    bc.append_report(report, "## two\n")
    text = report.read_text()
    assert text.startswith("# Benchmarks\n") and text.index("## one") < text.index("## two")


def test_command_line_and_machine():
    assert bc.command_line([str(SCRIPTS / "bench_scale.py"), "--out", "a b.md"]) == \
        "python scripts/bench_scale.py --out 'a b.md'"
    assert "cores usable" in bc.machine() and "load average at start" in bc.machine()
    assert f"TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']};" in bc.machine()


def test_benchmarks_run_with_the_package_defaults_even_when_they_import_tensorflow_first():
    """A script imports _bench_common first; TensorFlow imported right after has oneDNN on, as
    under the package (bench_pipeline imported TensorFlow before the package, so it measured with oneDNN off)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import _bench_common, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    out = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "True", out.stderr


def test_linear_fit():
    import bench_scale

    a, b, deviation = bench_scale.linear_fit([1000, 5000, 20000], [5 + 0.01 * n for n in (1000, 5000, 20000)])
    assert a == pytest.approx(5) and b == pytest.approx(0.01) and deviation == pytest.approx(0, abs=1e-9)


def test_memory_sampler_sees_this_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(150 * 2**20); time.sleep(3)"])
    try:
        with bc.MemorySampler(interval=0.05) as memory:
            import time

            time.sleep(1.5)
    finally:
        child.kill()
        child.wait()
    assert memory.worker_mb > 140 and memory.descendants_mb >= memory.worker_mb
    assert memory.driver_mb == pytest.approx(bc.current_rss_mb(), rel=0.5)


def test_memory_sampler_adds_up_the_cpu_each_process_spent_inside_the_block(tmp_path):
    """CPU seconds by process title: a child's CPU from before the block is not counted, one born
    inside is, and so is this process's own ("driver"); a second entry adds to the first."""
    import time

    # Each child spins for argv[1] CPU seconds, then says so in a file and idles a little, so the
    # sampler reads its CPU after the spin (no timing assumption about a loaded machine).
    spin = ("import pathlib, sys, time\nt = time.process_time()\nwhile time.process_time() - t < float(sys.argv[1]): pass\n"
            "pathlib.Path(sys.argv[2]).touch()\ntime.sleep(float(sys.argv[3]))\n")
    (tmp_path / "spun_before.py").write_text(spin)
    (tmp_path / "spun_inside.py").write_text(spin)
    before = subprocess.Popen([sys.executable, str(tmp_path / "spun_before.py"), "1.0", str(tmp_path / "b"), "30"])
    try:
        while not (tmp_path / "b").exists():   # its second of CPU is spent before the block
            time.sleep(0.05)
        sampler = bc.MemorySampler(interval=0.05)
        with sampler:
            inside = subprocess.Popen([sys.executable, str(tmp_path / "spun_inside.py"), "0.8", str(tmp_path / "i"), "0.5"])
            inside.wait()
            t = time.process_time()
            while time.process_time() - t < 0.3:
                pass
    finally:
        before.kill()
        before.wait()
    assert sampler.cpu_s["spun_inside.py"] >= 0.7
    assert sampler.cpu_s.get("spun_before.py", 0.0) < 0.3
    assert 0.25 <= sampler.cpu_s["driver"] < 1.5
    with sampler:
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
    assert sampler.entries == 2 and sampler.cpu_s["driver"] >= 0.55


def test_cpu_by_kind_sorts_ray_processes_and_averages_over_calls():
    import bench_pipeline

    sampler = bc.MemorySampler()
    sampler.entries = 2
    sampler.cpu_s = {"driver": 20.0, "ray::MapWorker(MapBatches(_Predictor))": 700.0, "ray::IDLE": 6.0,
                     "ray::Map(_decode_row)": 4.0, "raylet": 3.0, "ray::_StatsActor": 5.0, "gcs_server": 2.0}
    assert bench_pipeline.cpu_by_kind(sampler) == {"driver": 10.0, "model actors": 350.0, "decode workers": 5.0,
                                                   "Ray's own processes": 5.0}


def test_engines_section_reports_the_ratio_goal_and_where_the_cpu_went():
    import bench_pipeline

    cpu_local = {"driver": 750.0, "model actors": 0.0, "decode workers": 0.0, "Ray's own processes": 0.0}
    cpu_ray = {"driver": 47.0, "model actors": 731.0, "decode workers": 55.0, "Ray's own processes": 50.0}
    result = {"n": 20000, "distinct_files": 20000, "batch_size": 64, "image_size": 224, "model": "m",
              "times": {"label_pools": [400.0, 410.0], "ray": [480.0, 470.0]}, "ray_pair_ratios": [400 / 480, 410 / 470],
              "same_files": "yes", "driver_mb": 900.0, "ray_driver_mb": 500.0, "ray_worker_mb": 1500.0,
              "ray_all_mb": 3000.0, "cpu_local": cpu_local, "cpu_ray": cpu_ray}
    text = "\n".join(bench_pipeline.engines_section(result))
    assert "within 10% of the local engine (median pair >= 0.9): **missed**" in text
    assert "the local engine 750 s (driver 750); Ray 883 s (driver 47, model actors 731, decode workers 55, " \
           "Ray's own processes 50)" in text
    assert "| 20000 | 405.00 s (400.00-410.00) | 49.4 |" in text and "| 20000 | 475.00 s (470.00-480.00) | 42.1 |" in text
    result["ray_pair_ratios"] = [0.95, 0.92]
    assert "**met**" in "\n".join(bench_pipeline.engines_section(result))
    with pytest.raises(SystemExit):
        bench_pipeline.parse_args(["--part", "engines", "--no-ray"])


def test_bench_pool_mixes_real_files_and_repeats_them_under_new_names_beyond(tmp_path):
    import bench_pipeline

    files = []
    for i in range(10):
        files.append(tmp_path / f"img{i}.jpg")
        files[-1].write_bytes(bytes([i]))
    few, distinct = bench_pipeline.bench_pool(files, 5, tmp_path / "links")
    assert few == files[::2] and distinct == 5 and not (tmp_path / "links").exists()
    many, distinct = bench_pipeline.bench_pool(files, 25, tmp_path / "links")
    assert distinct == 10 and len(set(many)) == 25
    assert [p.read_bytes() for p in many] == [bytes([i % 10]) for i in range(25)]
    assert bench_pipeline.parse_args(["--images", "1000,5000"]).images == [1000, 5000]
    with pytest.raises(SystemExit):
        bench_pipeline.parse_args(["--images", "1000,x"])


def test_model_alone_gets_batches_cut_as_label_pools_cuts_the_pool(tmp_path):
    """The model alone is timed on as many images, in batches of the same sizes, as label_pools
    predicts; its in-memory batches are real images cycled, not zeros."""
    import bench_pipeline
    from PIL import Image

    from pseudolabel import pseudolabels

    rng = np.random.default_rng(0)
    files = []
    for i in range(14):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(files[-1])
    batches = bench_pipeline._memory_batches(files, 3, 16)
    starts = list(pseudolabels.batch_starts(len(files), 3))
    assert [int(b.shape[0]) for b in batches] == [min(3, len(files) - s) for s in starts] == [3, 3, 3, 3, 2]
    assert all(b.dtype.name == "float32" and tuple(b.shape[1:]) == (16, 16, 3) for b in batches)
    assert float(np.abs(batches[0].numpy()).max()) > 0
    assert np.array_equal(batches[4].numpy(), batches[0].numpy()[:2])  # only 4 distinct batches, cycled


@pytest.mark.parametrize("script", BENCHES)
def test_help(script):
    out = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_pipeline.py", "bench_tutorial.py", "bench_scale.py", "profile_student.py",
                                    "bench_near_duplicates.py", "seed_benchmark.py", "select_teacher_recipe.py",
                                    "bench_autotune.py", "bench_selection.py", "bench_onednn.py"])
def test_quick_run(script, house_rooms, tmp_path):
    report = tmp_path / "bench.md"
    extra = {"bench_scale.py": ["--pool-dir", str(tmp_path / "pool")],
             "bench_near_duplicates.py": ["--sheet", str(tmp_path / "sheet.png")],
             "bench_selection.py": ["--work", str(tmp_path / "work")]}.get(script, [])
    subprocess.run([sys.executable, str(SCRIPTS / script), "--quick", "--data", str(house_rooms), "--out", str(report),
                    *extra], check=True)
    text = report.read_text()
    assert "QUICK" in text and "- Command: `python scripts/" in text and "- Machine:" in text


def _summary(aucs: dict, modern_share: float) -> dict:
    """A comparison summary (report/compare.json) as far as the seed benchmark reads it."""
    from pseudolabel.model_selection import choose_by_validation

    teacher = aucs["round0_teacher"]
    rows = [{"run": run, "model": "m", "roc_auc": auc, "val_roc_auc": auc, "delta_auc": auc - teacher,
             "baseline": run == "round0_teacher"} for run, auc in aucs.items()]
    return {"auc": "ROC AUC", "n_test_images": 89, "baseline": "round0_teacher", "positive_class": "modern",
            "rows": rows, "selection": choose_by_validation(rows),
            "pseudo_labels": {"labeled_prior": {"old": 0.6, "modern": 0.4}, "rounds": [
                {"run": "round1_lite0", "stages": {"before": {"share": {"old": 1 - modern_share, "modern": modern_share}}}}]}}


def test_seed_benchmark_records_finished_seeds_aggregates_them_and_replaces_its_section(tmp_path):
    """Seeds whose chain finished are recorded (kept across sessions) and counted; unfinished ones
    are not; the BENCHMARKS section of the experiment is replaced, other sections kept."""
    import seed_benchmark

    from pseudolabel.config import load_experiment
    from pseudolabel.demo import write_demo
    from pseudolabel.seeds import with_seed

    experiment_file = write_demo(tmp_path / "demo", n_labeled=8, n_unlabeled=4, n_test=4, size=16, epochs=1)
    experiment = load_experiment(experiment_file)
    figures = {0: ({"round0_teacher": 0.80, "baseline_probe": 0.83, "round1_lite0": 0.86}, 0.30),
               1: ({"round0_teacher": 0.78, "baseline_probe": 0.82, "round1_lite0": 0.88}, 0.50)}
    for seed, (aucs, share) in figures.items():
        report = Path(with_seed(experiment, seed).output) / "report"
        report.mkdir(parents=True)
        summary = _summary(aucs, share)
        if seed == 0:   # one run directory left, as a run leaves it: its provenance names the command
            run = report.parent / "round0_teacher"
            run.mkdir()
            (run / "provenance.json").write_text(json.dumps({"command": ["pseudolabel", "run", "x.toml"],
                                                             "started": "2026-01-02T03:04:05+00:00"}))
            (run / "metrics.json").write_text("{}")
            summary["rows"][0]["path"] = str(run)
        (report / "compare.json").write_text(json.dumps(summary))
    bench_md = tmp_path / "bench.md"
    bc.append_report(bench_md, "## Before (2026-01-01 00:00)\n\nkept\n")
    bc.append_report(bench_md, f"## Repeated seeds: {experiment.name} (2026-01-01 00:00)\n\nold figures\n")
    bc.append_report(bench_md, "## After (2026-01-01 00:00)\n\nkept too\n")
    records = tmp_path / "records"
    args = [str(experiment_file), "--seeds", "0,1,2", "--record-only", "--records", str(records), "--report", str(bench_md)]
    seed_benchmark.main(args)

    assert sorted(p.name for p in (records / experiment.name).glob("seed-*.json")) == ["seed-0.json", "seed-1.json"]
    text = bench_md.read_text()
    assert "old figures" not in text and "kept" in text and "kept too" in text
    assert text.index("## Before") < text.index("## Repeated seeds") < text.index("## After")
    section = text[text.index("## Repeated seeds"):text.index("## After")]
    assert "0.790 ± 0.014" in section                     # the teacher over the two seeds
    assert "+0.080" in section                            # the student minus the teacher, mean of +0.06 and +0.10
    assert "teacher >= probe (mean): teacher 0.790, probe 0.825: **missed**" in section
    assert "round1_lite0 +0.045" in section and "+ 0.03, interval above 0" in section
    assert "'modern' share within 5% of the labeled prior (40.0%): **met**" in section   # (30% + 50%) / 2
    assert "seed 0: `pseudolabel run x.toml` (2026-01-02 03:04 - " in section and "seed 1 (" in section
    assert "UTC, oneDNN not set (TensorFlow's default))" in section   # a provenance without "environment"
    assert "): not recorded" in section   # no hand note beside the records yet

    import shutil
    shutil.rmtree(Path(with_seed(experiment, 0).output))  # a new session: the run directories are gone
    seed_benchmark.main(args)
    text = bench_md.read_text()
    assert text.count("## Repeated seeds") == 1 and "0.790 ± 0.014" in text   # still counted from the records
    # Its subsections stay inside it: rewriting it leaves no stray copy behind.
    assert text.count("Choosing by validation") == 1 and "\n### Choosing by validation" in text
    assert "seed 0: `pseudolabel run x.toml` (2026-01-02 03:04 - " in text   # kept in the record
    # Seeds whose provenance is lost are told by a hand-kept note beside the records.
    (tmp_path / "records" / experiment.name / seed_benchmark.HAND_NOTE).write_text("by hand, on Tuesday\n")
    seed_benchmark.main(args)
    assert "from trained_by.txt): by hand, on Tuesday" in bench_md.read_text()


def test_onednn_text_says_which_runs_had_onednn_on():
    import seed_benchmark

    runs = [{"run": "round0_teacher", "onednn": None}, {"run": "round1_lite0", "onednn": "1"}]
    assert seed_benchmark.onednn_text(runs) == "oneDNN on in round1_lite0 only"
    assert seed_benchmark.onednn_text(runs[1:]) == "oneDNN on"
    assert seed_benchmark.onednn_text([{"run": "r", "onednn": "0"}]) == "oneDNN off"
    assert seed_benchmark.onednn_text(runs[:1]) == "oneDNN not set (TensorFlow's default)"


def test_seed_records_carry_their_config_and_another_config_is_never_added_silently(tmp_path, capsys):
    import seed_benchmark

    from pseudolabel.config import load_experiment
    from pseudolabel.demo import write_demo
    from pseudolabel.seeds import with_seed

    experiment_file = write_demo(tmp_path / "a" / "demo", n_labeled=8, n_unlabeled=4, n_test=4, size=16, epochs=1)
    elsewhere = write_demo(tmp_path / "b" / "demo", n_labeled=8, n_unlabeled=4, n_test=4, size=16, epochs=1)
    experiment = load_experiment(experiment_file)
    current = seed_benchmark.fingerprint(seed_benchmark.resolved_config(experiment))
    # The same experiment in another checkout (other absolute paths) has the same fingerprint.
    assert seed_benchmark.fingerprint(seed_benchmark.resolved_config(load_experiment(elsewhere))) == current
    report = Path(with_seed(experiment, 0).output) / "report"
    report.mkdir(parents=True)
    (report / "compare.json").write_text(json.dumps(_summary({"round0_teacher": 0.8, "baseline_probe": 0.83,
                                                              "round1_lite0": 0.86}, 0.4)))
    records, bench_md = tmp_path / "records", tmp_path / "bench.md"
    args = [str(experiment_file), "--seeds", "0", "--records", str(records), "--report", str(bench_md)]
    seed_benchmark.main([*args, "--record-only"])
    record = json.loads((records / "demo" / "seed-0.json").read_text())
    assert record["config_fingerprint"] == current and record["config"]["pseudo"]["threshold"] == 0.3
    assert f"Config: fingerprint {current} in every record" in bench_md.read_text()
    seed_benchmark.main(args)   # the same config: the recorded seed counts, nothing retrained

    with open(experiment_file, "a") as f:    # the experiment changes: its records no longer match
        f.write("\n[pseudo]\nthreshold = 0.6\n")
    with pytest.raises(SystemExit) as stopped:
        seed_benchmark.main(args)
    message = str(stopped.value)
    assert "seed-0.json: recorded with another config" in message and "--records DIR" in message
    assert "\n" not in message
    seed_benchmark.main([*args, "--record-only"])   # the report can still be rebuilt, and says so
    assert "warning:" in capsys.readouterr().err
    assert "the records differ from the experiment's current config" in bench_md.read_text()


def _record(run, seed, auc):
    return {"run": run, "seed": seed, "roc_auc": auc, "train_s": 60.0 * (seed + 1)}


def test_algorithm_benchmark_summary_pairs_each_algorithm_with_the_better_baseline():
    import bench_algorithms

    aucs = {"teacher": [0.80, 0.78], "probe": [0.83, 0.82], "noisy_student": [0.90, 0.88],
            "fixmatch": [0.84, 0.80], "freematch": [0.81]}
    found = {run: {s: _record(run, s, a) for s, a in enumerate(values)} for run, values in aucs.items()}
    result = bench_algorithms.summarize(found)
    rows = {row["run"]: row for row in result["rows"]}
    assert result["better_baseline"] == "probe" and rows["probe"]["roc_auc_mean"] == pytest.approx(0.825)
    assert rows["fixmatch"]["delta_better_mean"] == pytest.approx(-0.005)      # (+0.01 - 0.02) / 2
    assert rows["freematch"]["delta_better_mean"] == pytest.approx(-0.02) and rows["freematch"]["paired_seeds"] == [0]
    assert rows["teacher"]["train_s_mean"] == 90.0
    # noisy_student beats the baseline but is not online: the goal is about the online ones
    assert not result["goal_met"] and result["best_online"]["run"] == "fixmatch"
    assert "**missed** (best online: fixmatch -0.005; on 2 of 3 seeds so far)" in bench_algorithms.goal_line(result, 3)
    found["flexmatch"] = {0: _record("flexmatch", 0, 0.86), 1: _record("flexmatch", 1, 0.83)}
    result = bench_algorithms.summarize(found)
    assert result["goal_met"] and "**met** (best online: flexmatch +0.020" in bench_algorithms.goal_line(result, 2)
    assert "not decided yet" in bench_algorithms.goal_line(bench_algorithms.summarize({"teacher": found["teacher"]}), 2)


def test_algorithm_benchmark_records_pairs_writes_its_section_and_resumes(tmp_path):
    """--quick on the tiny demo: every finished (algorithm, seed) and the seed's teacher and probe
    are recorded, the section replaced; a rerun skips the recorded pairs and adds only the new one."""
    import bench_algorithms

    work, report = tmp_path / "work", tmp_path / "bench.md"
    bc.append_report(report, "## Online algorithms: demo (2026-01-01 00:00)\n\nold figures\n")
    bc.append_report(report, "## After (2026-01-01 00:00)\n\nkept\n")
    args = ["--quick", "--work", str(work), "--seeds", "0", "--out", str(report)]
    bench_algorithms.main([*args, "--algorithms", "noisy_student,fixmatch"])
    records = work / "records" / "demo"
    names = sorted(p.name for p in records.glob("*.json"))
    assert names == ["budget.json", "fixmatch-seed-0.json", "noisy_student-seed-0.json", "probe-seed-0.json",
                     "teacher-seed-0.json"]
    fixmatch = json.loads((records / "fixmatch-seed-0.json").read_text())
    assert fixmatch["run_dir"] == "round1_fixmatch_tiny_cnn" and fixmatch["batches"]["steps_per_epoch"] == 2
    assert fixmatch["batches"]["unlabeled_batch"] == 2 * fixmatch["batches"]["labeled_batch"]   # the same budget
    noisy = json.loads((records / "noisy_student-seed-0.json").read_text())
    assert noisy["batches"]["unlabeled_batch"] == fixmatch["batches"]["unlabeled_batch"] and noisy["epochs"] == 1
    assert fixmatch["train_cpu_s"] > 0 and noisy["train_cpu_s"] > 0   # the students' CPU time, beside wall time
    text = report.read_text()
    assert "old figures" not in text and text.count("## Online algorithms: demo") == 1 and "kept" in text
    assert "| fixmatch | 0 |" in text and "2 optimizer steps" in text and "QUICK" in text
    assert "(one seed: no spread yet)" in text and "± 0.000" not in text   # no sd from one seed
    assert "at least one online algorithm beats the better supervised baseline" in text

    before = {p.name: p.read_text() for p in records.glob("*.json")}
    import shutil
    shutil.rmtree(work / "demo" / "seed-0" / "round1_fixmatch_tiny_cnn")   # gone: the record still counts
    bench_algorithms.main([*args, "--algorithms", "noisy_student,fixmatch,pseudo_label"])
    assert not (work / "demo" / "seed-0" / "round1_fixmatch_tiny_cnn").exists()   # not run again
    assert all((records / name).read_text() == content for name, content in before.items())
    assert (records / "pseudo_label-seed-0.json").exists()
    assert "| pseudo_label | 0 |" in report.read_text() and "| fixmatch | 0 |" in report.read_text()
    # A record made before CPU time was kept shows "-" in the CPU column, not a wrong mean.
    old_record = {k: v for k, v in json.loads((records / "pseudo_label-seed-0.json").read_text()).items()
                  if k != "train_cpu_s"}
    (records / "pseudo_label-seed-0.json").write_text(json.dumps(old_record))
    bench_algorithms.main([*args, "--algorithms", "noisy_student,fixmatch,pseudo_label"])
    rows = {line.split(" | ")[0]: line for line in report.read_text().splitlines() if line.startswith("| ")}
    assert rows["| pseudo_label"].endswith(" min | - |") and not rows["| fixmatch"].endswith("| - |")
    # --report-only trains nothing, not even a pair not recorded yet: it rebuilds the section.
    report.write_text(report.read_text().replace("| pseudo_label | 0 |", "| stale | 0 |"))
    bench_algorithms.main([*args, "--algorithms", "noisy_student,fixmatch,pseudo_label,flexmatch", "--report-only"])
    assert "| pseudo_label | 0 |" in report.read_text() and not (records / "flexmatch-seed-0.json").exists()
    from types import SimpleNamespace
    with pytest.raises(SystemExit, match="made with budget"):   # records of another budget do not mix
        bench_algorithms.check_budget(records, SimpleNamespace(epochs=3, steps=2, batch=4, mu=2.0))


def test_ray_startup_section_sums_the_steps_before_the_first_batch():
    import bench_pipeline

    times = {"init": [6.0, 8.0, 7.0], "actor_start": [0.5] * 3, "import_tf": [8.0] * 3, "load": [2.5] * 3,
             "first_forward": [5.0] * 3, "shutdown": [1.0] * 3}
    text = "\n".join(bench_pipeline.ray_startup_section({"times": times, "model": "m", "image_size": 224,
                                                          "batch_size": 64}))
    assert "**23.0 s**" in text           # 7 + 0.5 + 8 + 2.5 + 5: the shutdown is not counted
    assert "**15.5 s** a labeling" in text  # Ray's own part: init, actor start, TensorFlow import
    assert "7.00 s (6.00-8.00)" in text
    assert bench_pipeline.parse_args(["--part", "ray-startup"]).part == "ray-startup"
