"""The benchmark scripts (scripts/bench_*.py, profile_student.py): helpers, and that they run.

No timing is asserted anywhere: the figures belong in BENCHMARKS.md, measured on a quiet machine.
The `--quick` runs (real data and weights, about a minute each) are marked slow.
"""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHES = ["bench_pipeline.py", "bench_tutorial.py", "bench_scale.py", "profile_student.py", "bench_teacher.py",
           "bench_near_duplicates.py"]
sys.path.insert(0, str(SCRIPTS))

import _bench_common as bc  # noqa: E402


def test_alternate_runs_variants_in_turn():
    calls = []
    times = bc.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(len(v) == 3 and min(v) >= 0 for v in times.values())


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


def test_linear_fit():
    import bench_scale

    a, b, deviation = bench_scale.linear_fit([1000, 5000, 20000], [5 + 0.01 * n for n in (1000, 5000, 20000)])
    assert a == pytest.approx(5) and b == pytest.approx(0.01) and deviation == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("script", BENCHES)
def test_help(script):
    out = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_pipeline.py", "bench_tutorial.py", "bench_scale.py", "profile_student.py",
                                    "bench_near_duplicates.py"])
def test_quick_run(script, house_rooms, tmp_path):
    report = tmp_path / "bench.md"
    extra = {"bench_scale.py": ["--pool-dir", str(tmp_path / "pool")],
             "bench_near_duplicates.py": ["--sheet", str(tmp_path / "sheet.png")]}.get(script, [])
    subprocess.run([sys.executable, str(SCRIPTS / script), "--quick", "--data", str(house_rooms), "--out", str(report),
                    *extra], check=True)
    text = report.read_text()
    assert "QUICK" in text and "- Command: `python scripts/" in text and "- Machine:" in text
