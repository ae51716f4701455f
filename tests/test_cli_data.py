"""`pseudolabel data ...` through click's CliRunner, on tiny synthetic images."""

import json
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pseudolabel import data as D
from pseudolabel.data import duplicates
from pseudolabel.cli import main
from pseudolabel.cli.data import data as data_group


@pytest.fixture(autouse=True)
def fresh_hash_cache(monkeypatch):
    monkeypatch.setattr(duplicates, "_DEFAULT_CACHE", D.HashCache())


def run(*args):
    return CliRunner().invoke(main, ["data", *map(str, args)])


def squeeze(text):
    """Output with runs of spaces collapsed, so tests do not depend on column widths."""
    return re.sub(" +", " ", text)


def test_every_command_and_option_has_help():
    assert data_group.help
    for name, command in data_group.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} {param.opts}"
        assert run(name, "--help").exit_code == 0


def test_summary_default_pool_is_the_labeled_folder(synthetic_root):
    result = run("summary", "--labels", synthetic_root / "labels.csv", "--classes", "house_rooms")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Labeled: 40 images" in out
    assert "class 0 old: 20  <- N, O" in out and "class 1 modern (positive): 20  <- M" in out
    assert "Pool Labeled:" in out and "found 40, kept 0, excluded 40 (40 labeled" in out
    # no --split: the split `data split` would write is shown, with its sizes
    assert "Split: none given; `pseudolabel data split` (seed 0) would write this one" in out
    assert "test 8 4 4" in squeeze(out)


def test_summary_with_split_pools_and_report(synthetic_root, tmp_path):
    split = tmp_path / "split.csv"
    assert run("split", "--root", synthetic_root, "--out", split).exit_code == 0
    pixels = np.asarray(Image.open(synthetic_root / "Labeled/img_1.jpg"))
    Image.fromarray(pixels).save(synthetic_root / "Pool" / "copy.png")
    (synthetic_root / "Pool" / "broken.jpg").write_bytes(b"")
    result = run("summary", "--root", synthetic_root, "--split", split, "--pool", synthetic_root / "Pool",
                 "--report-dir", tmp_path / "report")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train 26 13 13" in squeeze(out) and "test 8 4 4" in squeeze(out)
    assert "found 42, kept 40, excluded 1 (0 labeled, 1 near-duplicates of labeled), skipped 1" in out
    assert "Pool/copy.png: near-duplicate of labeled image Labeled/img_1.jpg" in out
    assert "Pool/broken.jpg: empty file (0 bytes)" in out
    assert (tmp_path / "report" / "pools.csv").exists() and (tmp_path / "report" / "pools.json").exists()


def test_summary_json_and_empty_pool_warning(synthetic_root, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("summary", "--root", synthetic_root, "--pool", tmp_path / "empty", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: pool 'empty'" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["labeled"]["images"] == 40 and summary["pools"][0]["counts"]["found"] == 0


def test_summary_bad_input_fails_cleanly(synthetic_root):
    missing = run("summary", "--root", synthetic_root, "--pool", synthetic_root / "nope")
    assert missing.exit_code == 1 and "nope: pool folder does not exist" in missing.output
    (synthetic_root / "Labeled/img_2.jpg").write_bytes(b"")
    result = run("summary", "--root", synthetic_root, "--no-pool")
    assert result.exit_code == 1
    assert "labels.csv: 1 problem(s)" in result.output and "line 3: Labeled/img_2.jpg: empty file" in result.output
    assert "Traceback" not in result.output
    (synthetic_root / "labels.csv").write_text("image,label\nLabeled/img_1.jpg,M\nLabeled/img_3.jpg,Q\n")
    unknown = run("split", "--root", synthetic_root, "--classes", "house_rooms", "--out", synthetic_root / "s.csv")
    assert unknown.exit_code == 1 and "labels.csv: 1 problem(s)" in unknown.output
    assert "line 3: Labeled/img_3.jpg: unknown label 'Q'" in unknown.output


def test_split_command_is_deterministic_and_guards_the_file(synthetic_root, tmp_path):
    out = tmp_path / "splits" / "s.csv"
    first = run("split", "--labels", synthetic_root / "labels.csv", "--out", out, "--classes", "house_rooms")
    assert first.exit_code == 0, first.output
    digest = D.read_split(out, synthetic_root).hash
    assert f"wrote {out}\nsha256 {digest}" in first.output
    assert "train 26 13 13" in squeeze(first.output)
    again = run("split", "--labels", synthetic_root / "labels.csv", "--out", out, "--classes", "house_rooms")
    assert again.exit_code == 0 and f"unchanged {out}" in again.output
    other = run("split", "--root", synthetic_root, "--out", out, "--seed", "7")
    assert other.exit_code == 1 and "holds a different split" in other.output
    forced = run("split", "--root", synthetic_root, "--out", out, "--seed", "7", "--force")
    assert forced.exit_code == 0 and "overwrote" in forced.output
    assert D.read_split(out, synthetic_root).hash != digest


def test_import_letters_reports_mismatch(tmp_path):
    folder = tmp_path / "Bedroom"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 5, 6, 10]:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"bed_{n}.jpg")
    letters = tmp_path / "letters.txt"
    letters.write_text("MONMO")
    out = tmp_path / "labels.csv"
    result = run("import-letters", "--letters", letters, "--folder", folder, "--out", out,
                 "--missing", "bed_4.jpg", "--skip", "bed_2.jpg")
    assert result.exit_code == 0, result.output
    assert "5 letters for 6 images" in result.stderr and "(+1 missing)" in result.stderr
    assert "up to bed_5.jpg" in result.stderr and "the other 2 images stay unlabeled" in result.stderr
    assert out.read_text() == "image,label\nBedroom/bed_1.jpg,M\nBedroom/bed_3.jpg,N\nBedroom/bed_5.jpg,O\n"
    assert "3 labeled images (M 1, N 1, O 1); 1 skipped, 1 missing" in result.stdout
    letters.write_text("MONMONMON")
    too_many = run("import-letters", "--letters", letters, "--folder", folder, "--out", tmp_path / "x.csv")
    assert too_many.exit_code == 1 and "9 letters but only 6 images" in too_many.output


def test_cli_import_is_light():
    import subprocess
    import sys

    code = "import sys, pseudolabel.cli.data; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def long_class_root(tmp_path):
    """A labeled set whose class names are longer than a 10-character column."""
    from pseudolabel.synthetic import synthetic_image

    root = tmp_path / "long"
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["KitchenLivingroom", "Bathroom_with_bathtub", "Bed"]
    rows = ["image,label"]
    for i in range(36):
        Image.fromarray(synthetic_image(i % 3, rng, 32)).save(root / "imgs" / f"i_{i}.jpg", quality=95)
        rows.append(f"imgs/i_{i}.jpg,{names[i % 3]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, sorted(names)


def assert_table_aligned(lines, names):
    """Header cells are separated by spaces, and every number ends where its header ends (the
    first column, the part name, is left-aligned)."""
    header = next(line for line in lines if line.split()[:2] == ["part", "images"])
    assert header.split() == ["part", "images", *names]
    ends = [m.end() for m in re.finditer(r"\S+", header)][1:]
    body = [line for line in lines if line.split() and line.split()[0] in ("train", "val", "test")]
    assert len(body) == 3
    for line in body:
        assert [m.end() for m in re.finditer(r"\S+", line)][1:] == ends, (header, line)


def test_split_per_class_counts_and_long_class_names(tmp_path):
    root, names = long_class_root(tmp_path)
    out = tmp_path / "split.csv"
    result = run("split", "--root", root, "--out", out, "--test-per-class", 3, "--val-per-class", 2)
    assert result.exit_code == 0, result.output
    assert_table_aligned(result.output.splitlines(), names)
    split = D.read_split(out, root)
    assert split.class_counts()["test"] == {n: 3 for n in names}
    assert split.class_counts()["val"] == {n: 2 for n in names}
    summary = run("summary", "--root", root, "--split", out, "--no-pool")
    assert summary.exit_code == 0, summary.output
    assert_table_aligned(summary.output.splitlines(), names)


def test_split_per_class_bad_options_fail_cleanly(tmp_path):
    root, _ = long_class_root(tmp_path)
    out = tmp_path / "split.csv"
    both = run("split", "--root", root, "--out", out, "--test-per-class", 3, "--test-size", 0.2)
    assert both.exit_code == 2 and "not both" in both.output
    alone = run("split", "--root", root, "--out", out, "--val-per-class", 3)
    assert alone.exit_code == 2 and "--val-per-class needs --test-per-class" in alone.output
    too_many = run("split", "--root", root, "--out", out, "--test-per-class", 10, "--val-per-class", 2)
    assert too_many.exit_code != 0 and "Traceback" not in too_many.output
    assert "class 'Bed' has 12" in too_many.output and not out.exists()


def test_split_and_summary_take_the_class_map_of_an_experiment(tmp_path):
    """Any [data.classes] table (here a map merging two raw labels), not only the named maps."""
    root, _ = long_class_root(tmp_path)
    exp = tmp_path / "e.toml"
    exp.write_text(f'[data]\nroot = "{root}"\nlabels = "{root / "labels.csv"}"\n[data.classes]\n'
                   'names = ["other", "bath"]\npositive = "bath"\n'
                   'map = { Bathroom_with_bathtub = "bath", KitchenLivingroom = "other", Bed = "other" }\n')
    out = tmp_path / "split.csv"
    result = run("split", "--experiment", exp, "--out", out, "--test-per-class", 3)
    assert result.exit_code == 0, result.output
    assert_table_aligned(result.output.splitlines(), ["other", "bath"])
    class_map = D.ClassMap(["other", "bath"], {"Bathroom_with_bathtub": "bath", "KitchenLivingroom": "other",
                                               "Bed": "other"}, positive="bath")
    assert D.read_split(out, root, class_map).class_counts()["test"] == {"other": 3, "bath": 3}
    summary = run("summary", "--experiment", exp, "--split", out, "--no-pool")
    assert summary.exit_code == 0, summary.output
    assert "class 1 bath (positive): 12" in squeeze(summary.output) and "class 0 other: 24" in squeeze(summary.output)
    assert "<- Bed, KitchenLivingroom" in summary.output
    folders = tmp_path / "f.toml"
    folders.write_text(f'[data]\nlayout = "folders"\ntrain = "{root}"\n')
    refused = run("split", "--experiment", folders, "--out", out)
    assert refused.exit_code == 2 and "import-folders` writes that split as CSVs" in refused.output
