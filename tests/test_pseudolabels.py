"""Pseudo-labeling: the teacher's table over the pools, then filtering, balancing and targets."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.pseudolabels import (
    PseudoLabelError,
    PseudoLabelTable,
    balance_indices,
    describe_selection,
    hard_targets,
    read_pseudo_labels,
    select_pseudo_labels,
    sidecar,
    soft_targets,
)

CLASSES = ["M", "O"]


def make_table(probs, pools=None, class_names=CLASSES) -> PseudoLabelTable:
    probs = np.asarray(probs, np.float32)
    n = len(probs)
    return PseudoLabelTable(
        images=[f"/pool/img_{i}.jpg" for i in range(n)],
        pools=list(pools) if pools is not None else ["Pool"] * n,
        sha256=["0" * 64] * n,
        probs=probs,
        class_names=list(class_names),
    )


# --------------------------------------------------------------------------- targets


def test_soft_targets_are_tempered_softmax():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for t in (0.5, 1.0, 2.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        np.testing.assert_allclose(soft_targets(probs, t), expected, rtol=1e-5)
    np.testing.assert_allclose(soft_targets(probs, 1.0), probs, rtol=1e-5)
    # Lower temperature sharpens, higher flattens.
    assert soft_targets(probs, 0.5)[0, 0] > probs[0, 0] > soft_targets(probs, 2.0)[0, 0]
    with pytest.raises(PseudoLabelError):
        soft_targets(probs, 0.0)


def test_soft_targets_survive_zero_probabilities():
    q = soft_targets(np.array([[1.0, 0.0], [0.0, 1.0]]), 0.5)
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q, [[1, 0], [0, 1]], atol=1e-6)


def test_hard_targets_smoothed_one_hot():
    y = hard_targets(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), label_smoothing=0.1)
    np.testing.assert_allclose(y, [[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    assert y.dtype == np.float32


# --------------------------------------------------------------------------- threshold and balance


def test_threshold_drops_unconfident_rows():
    table = make_table([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8], [0.51, 0.49]])
    paths, targets, report = select_pseudo_labels(table, threshold=0.6, balance=False)
    assert paths == ["/pool/img_0.jpg", "/pool/img_2.jpg"]
    assert targets.shape == (2, 2) and targets.dtype == np.float32
    np.testing.assert_allclose(targets, table.probs[[0, 2]], rtol=1e-5)
    assert report["before"]["n"] == 4
    assert report["after_threshold"]["n"] == 2
    assert report["after_threshold"]["per_class"] == {"M": 1, "O": 1}


def test_three_class_threshold_uses_top_probability():
    table = make_table([[0.34, 0.33, 0.33], [0.1, 0.1, 0.8]], class_names=["a", "b", "c"])
    paths, _, _ = select_pseudo_labels(table, threshold=0.35, balance=False)
    assert paths == ["/pool/img_1.jpg"]


def test_balance_keeps_most_confident_and_duplicates_exactly():
    # Class M: 5 rows, class O: 2 rows -> target 5: O's 2 images become 5 rows (2 + 2 + 1).
    probs = [[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.7, 0.3], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]
    table = make_table(probs)
    paths, targets, report = select_pseudo_labels(table, threshold=0.0, balance=True, seed=3)
    assert len(paths) == 10 and targets.shape == (10, 2)
    assert report["selected"]["per_class"] == {"M": 5, "O": 5}
    assert report["selected"]["unique_images"] == 7
    o_rows = [p for p in paths if p in ("/pool/img_5.jpg", "/pool/img_6.jpg")]
    assert sorted(Counter(o_rows).values()) == [2, 3]
    # Same seed -> same rows; the duplicated image may change with the seed.
    assert select_pseudo_labels(table, threshold=0.0, seed=3)[0] == paths


def test_balance_per_class_caps_to_most_confident():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.99, 0.01], [0.7, 0.3], [0.2, 0.8]]
    paths, _, report = select_pseudo_labels(make_table(probs), threshold=0.0, per_class=2)
    m_paths = [p for p in paths if p != "/pool/img_4.jpg"]
    assert sorted(m_paths) == ["/pool/img_0.jpg", "/pool/img_2.jpg"]  # the two most confident M
    assert paths.count("/pool/img_4.jpg") == 2  # O duplicated up to 2
    assert report["selected"]["per_class"] == {"M": 2, "O": 2}


def test_balance_indices_exact_counts_many_classes():
    rng = np.random.default_rng(0)
    predicted = rng.integers(0, 4, size=37)
    predicted[predicted == 3] = 0  # class 3 empty
    confidence = rng.uniform(size=37)
    idx = balance_indices(predicted, confidence, 4, per_class=11, seed=1)
    counts = np.bincount(predicted[idx], minlength=4)
    assert counts.tolist() == [11, 11, 11, 0]
    for k in range(3):  # each image of a short class appears floor or ceil(target / n) times
        members = np.flatnonzero(predicted == k)
        if len(members) < 11:
            reps = np.bincount(idx, minlength=37)[members]
            assert set(reps.tolist()) <= {11 // len(members), 11 // len(members) + 1}


def test_per_pool_counts_in_report():
    probs = [[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.1, 0.9], [0.95, 0.05]]
    pools = ["A", "A", "B", "B", "B"]
    _, _, report = select_pseudo_labels(make_table(probs, pools), threshold=0.6, balance=False)
    assert report["before"]["per_pool"] == {"A": 2, "B": 3}
    assert report["after_threshold"]["per_pool"] == {"A": 2, "B": 2}
    assert report["selected"]["per_pool"] == {"A": 2, "B": 2}


def test_hard_mode_and_empty_selection():
    table = make_table([[0.9, 0.1], [0.2, 0.8]])
    _, targets, _ = select_pseudo_labels(table, mode="hard", label_smoothing=0.1, threshold=0.0)
    np.testing.assert_allclose(targets, [[0.95, 0.05], [0.05, 0.95]], rtol=1e-6)
    paths, targets, report = select_pseudo_labels(table, threshold=0.99)
    assert paths == [] and targets.shape == (0, 2) and report["selected"]["n"] == 0
    assert report["empty_classes"] == ["M", "O"]
    assert "no pseudo-labels for class(es) M, O" in describe_selection(report)
    with pytest.raises(PseudoLabelError):
        select_pseudo_labels(table, mode="medium")


# --------------------------------------------------------------------------- reading tables


def test_read_rejects_a_foreign_csv(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("image,label\na.jpg,M\n")
    with pytest.raises(PseudoLabelError, match="not a pseudo-label table"):
        read_pseudo_labels(bad)
    with pytest.raises(FileNotFoundError):
        read_pseudo_labels(tmp_path / "missing.csv")


def test_sidecar_names(tmp_path):
    assert sidecar(tmp_path / "pl.csv", "skipped").name == "pl.skipped.csv"
    assert sidecar(tmp_path / "pl.csv", "summary").name == "pl.summary.json"


# --------------------------------------------------------------------------- labeling the pools

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def teacher():
    import keras

    from pseudolabel.backbones import create_model

    keras.utils.set_random_seed(0)
    return create_model("tiny_cnn", 2, image_size=IMAGE_SIZE, weights=None, dropout=0.5)


@pytest.fixture
def pool_with_corrupt_file(synthetic_root):
    from pseudolabel.data import scan_pool

    (synthetic_root / "Pool" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return scan_pool(synthetic_root / "Pool")  # not filtered, so the corrupt file reaches labeling


def label(teacher, pools, out_path, **kwargs):
    from pseudolabel.pseudolabels import label_pools

    kwargs = {"batch_size": 16, **kwargs}
    return label_pools(teacher, pools, image_size=IMAGE_SIZE, class_names=CLASSES, out_path=out_path,
                       progress=False, **kwargs)


def test_table_rows_probabilities_and_hashes(teacher, pool_with_corrupt_file, tmp_path):
    out = tmp_path / "labels" / "pseudo.csv"
    table = label(teacher, [pool_with_corrupt_file], out)
    readable = [str(p) for p in pool_with_corrupt_file.images if p.name != "corrupt.jpg"]
    assert sorted(table.images) == sorted(readable) and len(table) == 40
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "pool", "sha256", "p_M", "p_O", "confidence", "predicted"]
    probs = np.array([[float(r["p_M"]), float(r["p_O"])] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    for r, p in zip(rows, probs):
        assert r["sha256"] == hashlib.sha256(Path(r["image"]).read_bytes()).hexdigest()
        assert r["pool"] == "Pool"
        assert float(r["confidence"]) == pytest.approx(p.max(), abs=1e-7)
        assert r["predicted"] == CLASSES[int(p.argmax())]
    # Re-reading gives the same table.
    again = read_pseudo_labels(out)
    assert again.images == table.images and np.array_equal(again.probs, table.probs)


def test_corrupt_file_is_skipped_and_listed(teacher, pool_with_corrupt_file, tmp_path):
    out = tmp_path / "pseudo.csv"
    label(teacher, [pool_with_corrupt_file], out)
    with open(sidecar(out, "skipped"), newline="") as f:
        skipped = list(csv.DictReader(f))
    assert [Path(r["image"]).name for r in skipped] == ["corrupt.jpg"]
    assert skipped[0]["pool"] == "Pool" and skipped[0]["reason"]
    summary = json.loads(sidecar(out, "summary").read_text())
    assert summary["n"] == 40 and summary["skipped"] == 1 and summary["per_pool"] == {"Pool": 40}
    assert sum(summary["per_class"].values()) == 40


def test_predictions_are_noise_free(teacher, synthetic_root, tmp_path):
    """Inference mode, no augmentation: the table holds exactly model(image, training=False)."""
    from pseudolabel.data import scan_pool
    from pseudolabel.images import read_image

    pool = scan_pool(synthetic_root / "Pool")
    table = label(teacher, [pool], tmp_path / "a.csv")
    again = label(teacher, [pool], tmp_path / "b.csv")
    np.testing.assert_array_equal(table.probs, again.probs)
    first = np.stack([read_image(p, IMAGE_SIZE) for p in table.images[:8]]).astype(np.float32)
    expected = teacher(first, training=False).numpy()
    np.testing.assert_allclose(table.probs[:8], expected, atol=1e-5)


def test_flip_tta_averages_the_flipped_view(teacher, synthetic_root, tmp_path):
    from pseudolabel.data import scan_pool
    from pseudolabel.images import read_image

    pool = scan_pool(synthetic_root / "Pool")
    table = label(teacher, [pool], tmp_path / "tta.csv", tta="flip")
    x = np.stack([read_image(p, IMAGE_SIZE) for p in table.images[:4]]).astype(np.float32)
    expected = (teacher(x, training=False).numpy() + teacher(x[:, :, ::-1], training=False).numpy()) / 2
    np.testing.assert_allclose(table.probs[:4], expected, atol=1e-5)


def test_per_pool_rows_from_several_pools(teacher, synthetic_root, tmp_path):
    from pseudolabel.data import Pool

    images = sorted((synthetic_root / "Pool").glob("*.jpg"))
    pools = [Pool("A", synthetic_root / "Pool", images[:15]), Pool("B", synthetic_root / "Pool", images[15:])]
    table = label(teacher, pools, tmp_path / "pools.csv")
    assert table.summary()["per_pool"] == {"A": 15, "B": 25}
    _, _, report = select_pseudo_labels(table, threshold=0.0, balance=False)
    assert report["selected"]["per_pool"] == {"A": 15, "B": 25}


def test_interrupted_labeling_leaves_no_table(teacher, synthetic_root, tmp_path, monkeypatch):
    import pseudolabel.pseudolabels.predict as pl
    from pseudolabel.data import scan_pool

    real = pl.batch_predictor

    def failing_predictor(model, tta, image_size):
        predict = real(model, tta, image_size)
        calls = {"n": 0}

        def predict_batch(images):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("killed mid-way")
            return predict(images)

        return predict_batch

    monkeypatch.setattr(pl, "batch_predictor", failing_predictor)
    out = tmp_path / "out" / "pseudo.csv"
    with pytest.raises(RuntimeError, match="killed mid-way"):
        label(teacher, [scan_pool(synthetic_root / "Pool")], out)
    # No table, no temporary file, no sidecars: only the (released) lock file, which stays on purpose.
    assert [p.name for p in out.parent.iterdir()] == [".pseudo.csv.lock"]


def test_labeling_streams_a_few_batches_ahead(teacher, synthetic_root, tmp_path, monkeypatch):
    """The pool is never materialised: at most threads + 1 batches are decoded ahead of the model."""
    import pseudolabel.pseudolabels.batches as batches
    from pseudolabel.data import scan_pool

    events = []
    real_decode, real_predict = batches.decode_batch, batches.predict_decoded
    monkeypatch.setattr(batches, "decode_batch", lambda *a: (events.append("d"), real_decode(*a))[1])
    monkeypatch.setattr(batches, "predict_decoded", lambda *a: (events.append("p"), real_predict(*a))[1])
    label(teacher, [scan_pool(synthetic_root / "Pool")], tmp_path / "pseudo.csv", batch_size=4)
    assert events.count("d") == events.count("p") == 10
    ahead = [events[:k].count("d") - events[:k].count("p") for k in range(len(events))]
    assert max(ahead) <= 3  # 2 decode threads + 1


def test_a_second_labeling_traces_nothing_and_gives_the_same_rows(teacher, synthetic_root, tmp_path):
    """One compiled forward per (model, tta, size), reused; rows are the forward of batches cut by position."""
    from pseudolabel.data import scan_pool
    from pseudolabel.images import read_image
    from pseudolabel.pseudolabels import batch_predictor

    pool = scan_pool(synthetic_root / "Pool")
    first = label(teacher, [pool], tmp_path / "a.csv")
    forward = batch_predictor(teacher, "none", IMAGE_SIZE)
    traces = forward.experimental_get_tracing_count()
    second = label(teacher, [pool], tmp_path / "b.csv")
    assert batch_predictor(teacher, "none", IMAGE_SIZE) is forward
    assert forward.experimental_get_tracing_count() == traces == 1
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    np.testing.assert_array_equal(first.probs, second.probs)
    # The last batch (positions 32..39 of 40, batch 16) is exactly the forward of those images.
    x = np.stack([read_image(p, IMAGE_SIZE) for p in first.images[32:]])
    np.testing.assert_array_equal(first.probs[32:], forward(x).numpy())
    # Fed uint8 and cast in-graph: bit for bit the forward of the same batch cast to float32 first.
    np.testing.assert_array_equal(forward(x).numpy(), forward.float_forward(x.astype(np.float32)).numpy())
    assert batch_predictor(teacher, "flip", IMAGE_SIZE) is not forward


def test_empty_pool_gives_an_empty_table(teacher, synthetic_root, tmp_path):
    from pseudolabel.data import Pool

    table = label(teacher, [Pool("empty", synthetic_root, [])], tmp_path / "empty.csv")
    assert len(table) == 0 and read_pseudo_labels(tmp_path / "empty.csv").class_names == CLASSES


# --------------------------------------------------------------------------- the `label` command


def test_cli_label_excludes_labeled_images_and_writes_the_table(teacher, synthetic_root, tmp_path):
    import shutil

    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.training import save_model

    run_dir = tmp_path / "teacher"
    save_model(teacher, run_dir / "model.keras")
    shutil.copy(synthetic_root / "Labeled" / "img_1.jpg", synthetic_root / "Pool" / "copy_of_labeled.jpg")
    (synthetic_root / "Pool" / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "tables" / "pseudo.csv"
    result = CliRunner().invoke(main, ["label", "--model", str(run_dir), "--root", str(synthetic_root),
                                       "--pool", str(synthetic_root / "Pool"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = read_pseudo_labels(out)
    assert len(table) == 40 and table.class_names == ["M", "O"]
    assert not any("copy_of_labeled" in p or "broken" in p for p in table.images)
    pools = json.loads((out.parent / "pseudo.pools.json").read_text())["pools"]
    assert pools[0]["counts"]["excluded"] == 1 and pools[0]["counts"]["skipped"] == 1
    assert "pseudo-labeled 40 images" in result.output


def test_cli_label_refuses_a_model_with_other_classes(synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.backbones import create_model
    from pseudolabel.cli import main
    from pseudolabel.training import save_model

    model_file = save_model(create_model("tiny_cnn", 3, image_size=IMAGE_SIZE, weights=None), tmp_path / "m.keras")
    result = CliRunner().invoke(main, ["label", "--model", str(model_file), "--root", str(synthetic_root),
                                       "--pool", str(synthetic_root / "Pool"), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and "predicts 3 classes" in result.output
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------- sharded labeling


@pytest.fixture
def two_pools(synthetic_root):
    """Two pools (41 images in all, one corrupt: skipped), the second out of name order."""
    from pseudolabel.data import Pool

    (synthetic_root / "Pool" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = sorted((synthetic_root / "Pool").glob("*.jpg"))
    return [Pool("A", synthetic_root / "Pool", images[:17]), Pool("B", synthetic_root / "Pool", images[17:][::-1])]


def label_in_shards(teacher, pools, out, count):
    from pseudolabel.pseudolabels import part_path

    for index in range(count):
        part = label(teacher, pools, out, shard=(index, count))
        assert len(part) > 0 and part_path(out, index, count).exists()
    assert not out.exists()  # parts only, until merged
    return [part_path(out, index, count) for index in range(count)]


def test_three_shards_merge_to_the_unsharded_table(teacher, two_pools, tmp_path):
    from pseudolabel.pseudolabels import merge_pseudo_label_parts

    whole = label(teacher, two_pools, tmp_path / "whole" / "pseudo.csv")
    parts = label_in_shards(teacher, two_pools, tmp_path / "sharded" / "pseudo.csv", 3)
    assert [p.name for p in parts] == [f"pseudo.part-00{i}-of-003.csv" for i in range(3)]
    assert sorted(len(read_pseudo_labels(p)) for p in parts) == [13, 13, 14]  # 41 images, 1 skipped

    merged = merge_pseudo_label_parts(tmp_path / "sharded" / "pseudo.csv", progress=False)
    again = read_pseudo_labels(tmp_path / "sharded" / "pseudo.csv")
    for table in (merged, again):
        assert table.images == whole.images and table.pools == whole.pools and table.sha256 == whole.sha256
        np.testing.assert_allclose(table.probs, whole.probs, atol=1e-6)
    assert (sidecar(tmp_path / "sharded" / "pseudo.csv", "skipped").read_text()
            == sidecar(tmp_path / "whole" / "pseudo.csv", "skipped").read_text())
    summaries = [json.loads(sidecar(tmp_path / d / "pseudo.csv", "summary").read_text()) for d in ("whole", "sharded")]
    assert summaries[1].pop("shards")["count"] == 3
    assert {**summaries[0], "table": None} == {**summaries[1], "table": None}


def test_a_missing_or_duplicate_shard_is_refused(teacher, two_pools, tmp_path):
    import shutil

    from pseudolabel.pseudolabels import merge_pseudo_label_parts

    out = tmp_path / "pseudo.csv"
    parts = label_in_shards(teacher, two_pools, out, 3)
    copy = tmp_path / "copy" / "pseudo.part-002-of-003.csv"  # shard 0's part, under shard 2's name
    copy.parent.mkdir()
    for kind in ("skipped", "summary"):
        shutil.copy(sidecar(parts[0], kind), sidecar(copy, kind))
    shutil.copy(parts[0], copy)
    with pytest.raises(PseudoLabelError, match=r"duplicate shard\(s\): shard 0 of 3 in pseudo.part-000-of-003.csv, "
                                               r"pseudo.part-002-of-003.csv"):
        merge_pseudo_label_parts(out, [parts[0], parts[1], copy])
    with pytest.raises(PseudoLabelError, match=r"missing shard\(s\) 2 of 3: expected pseudo.part-002-of-003.csv"):
        merge_pseudo_label_parts(out, parts[:2])
    parts[1].unlink()
    with pytest.raises(PseudoLabelError, match=r"missing shard\(s\) 1 of 3"):
        merge_pseudo_label_parts(out)  # the parts found beside the table
    label(teacher, two_pools, out, shard=(1, 2))  # a stale part of another sharding beside them
    with pytest.raises(PseudoLabelError, match="differ in shard count"):
        merge_pseudo_label_parts(out)
    assert not out.exists()


def test_parts_of_another_pool_list_are_refused(teacher, two_pools, tmp_path):
    from pseudolabel.data import Pool
    from pseudolabel.pseudolabels import merge_pseudo_label_parts, part_path

    out = tmp_path / "pseudo.csv"
    label(teacher, two_pools, out, shard=(0, 2))
    other = [Pool("A", p.folder, p.images[:-1]) if p.name == "A" else p for p in two_pools]
    label(teacher, other, out, shard=(1, 2))
    with pytest.raises(PseudoLabelError, match="differ in pool image count"):
        merge_pseudo_label_parts(out, [part_path(out, 0, 2), part_path(out, 1, 2)])


def test_parse_shard():
    from pseudolabel.pseudolabels import parse_shard

    assert parse_shard("0/3") == (0, 3) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(PseudoLabelError, match="INDEX/COUNT"):
            parse_shard(bad)


def test_cli_label_in_shards_then_merge(teacher, synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.training import save_model

    save_model(teacher, tmp_path / "teacher" / "model.keras")
    common = ["label", "--model", str(tmp_path / "teacher"), "--root", str(synthetic_root),
              "--pool", str(synthetic_root / "Pool")]
    assert CliRunner().invoke(main, [*common, "--out", str(tmp_path / "whole.csv")]).exit_code == 0
    out = tmp_path / "sharded" / "pseudo.csv"
    for shard in ("0/2", "1/2"):
        result = CliRunner().invoke(main, [*common, "--out", str(out), "--shard", shard])
        assert result.exit_code == 0, result.output
        assert f"pseudolabel merge-labels {out}" in result.output
    result = CliRunner().invoke(main, ["merge-labels", str(out)])
    assert result.exit_code == 0, result.output
    whole, merged = read_pseudo_labels(tmp_path / "whole.csv"), read_pseudo_labels(out)
    assert merged.images == whole.images and np.allclose(merged.probs, whole.probs, atol=1e-6)
    bad = CliRunner().invoke(main, [*common, "--out", str(out), "--shard", "2/2"])
    assert bad.exit_code == 2 and "INDEX/COUNT" in bad.output
    out.unlink()
    (out.parent / "pseudo.part-001-of-002.csv").unlink()
    missing = CliRunner().invoke(main, ["merge-labels", str(out)])
    assert missing.exit_code == 1 and "missing shard(s) 1 of 2" in missing.output and not out.exists()


# --------------------------------------------------------------------------- damaged tables, locks, files not labeled


@pytest.fixture
def labeled_table(teacher, synthetic_root, tmp_path):
    from pseudolabel.data import scan_pool

    out = tmp_path / "tables" / "pseudo.csv"
    label(teacher, [scan_pool(synthetic_root / "Pool")], out)
    return out


def _cut(path, keep_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def test_a_finished_table_has_a_manifest_that_verifies(labeled_table):
    from pseudolabel.pseudolabels import table_problems

    manifest = json.loads(sidecar(labeled_table, "manifest").read_text())
    assert set(manifest["files"]) == {"pseudo.csv", "pseudo.skipped.csv", "pseudo.summary.json"}
    assert table_problems(labeled_table) == []


def test_a_table_cut_at_a_row_boundary_is_refused(labeled_table):
    from pseudolabel.pseudolabels import table_problems

    data = labeled_table.read_bytes()
    _cut(labeled_table, data.index(b"\n", len(data) // 2) + 1)  # whole rows, fewer of them
    for check in (lambda: read_pseudo_labels(labeled_table), lambda: select_pseudo_labels(labeled_table)):
        with pytest.raises(PseudoLabelError) as err:
            check()
        assert "pseudo.csv" in str(err.value) and "bytes" in str(err.value) and "\n" not in str(err.value)
    [problem] = table_problems(labeled_table)
    assert "pseudo.csv" in problem and "damaged" in problem
    # Without its manifest (a table of an older version) the summary's row count still catches it.
    sidecar(labeled_table, "manifest").unlink()
    with pytest.raises(PseudoLabelError, match=r"pseudo.csv: damaged: \d+ rows, its pseudo.summary.json counts 40"):
        read_pseudo_labels(labeled_table)
    assert "no pseudo.manifest.json" in table_problems(labeled_table)[0]


@pytest.mark.parametrize("cut_inside", ["probability", "class name"])
def test_a_table_cut_mid_row_names_the_file_and_line(labeled_table, cut_inside):
    sidecar(labeled_table, "manifest").unlink()  # the row check itself, not the manifest
    lines = labeled_table.read_bytes().splitlines(keepends=True)
    keep = sum(len(line) for line in lines[:6])
    keep += lines[6].index(b",0.") + 4 if cut_inside == "probability" else len(lines[6]) - 3  # before "\r\n"
    _cut(labeled_table, keep)
    with pytest.raises(PseudoLabelError) as err:
        read_pseudo_labels(labeled_table)
    message = str(err.value)
    assert message.startswith(f"{labeled_table}: line 7 is damaged") and "\n" not in message
    assert "inhomogeneous" not in message


@pytest.mark.parametrize("kind", ["skipped", "summary"])
def test_a_damaged_sidecar_is_named(labeled_table, kind):
    path = sidecar(labeled_table, kind)
    path.write_text(path.read_text() + "edited\n")
    with pytest.raises(PseudoLabelError, match=rf"{path.name}: damaged"):
        read_pseudo_labels(labeled_table)


def test_a_garbage_table_is_one_line(tmp_path):
    path = tmp_path / "pseudo.csv"
    path.write_bytes(b"image,pool,sha256,p_M,p_O,confidence,predicted\n\xff\xfe\x00garbage\n")
    with pytest.raises(PseudoLabelError, match="pseudo.csv: damaged"):
        read_pseudo_labels(path)


def _hold_lock_in_another_process(path):
    """A process holding the output's lock (as a running `label` does); returns it once it holds it."""
    import os
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pseudolabel.rundir import RunLock\n"
        f"lock = RunLock.for_file({str(path)!r}).acquire()\n"
        "print('locked', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_labeling_of_one_output_is_refused_with_the_holder_pid(teacher, synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.data import scan_pool
    from pseudolabel.rundir import LockedError
    from pseudolabel.training import save_model

    save_model(teacher, tmp_path / "teacher" / "model.keras")
    out = tmp_path / "tables" / "pseudo.csv"
    holder = _hold_lock_in_another_process(out)
    try:
        with pytest.raises(LockedError, match=f"pseudo.csv: in use by another process \\(pid {holder.pid}\\)"):
            label(teacher, [scan_pool(synthetic_root / "Pool")], out)
        result = CliRunner().invoke(main, ["label", "--model", str(tmp_path / "teacher"), "--root",
                                           str(synthetic_root), "--pool", str(synthetic_root / "Pool"),
                                           "--out", str(out)])
        assert result.exit_code == 1 and f"pid {holder.pid}" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists() and not sidecar(out, "pools").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait(60)
    assert len(label(teacher, [scan_pool(synthetic_root / "Pool")], out)) == 40  # free once the holder ends


def test_labeling_removes_what_a_killed_labeling_left(teacher, synthetic_root, tmp_path):
    from pseudolabel.data import scan_pool

    out = tmp_path / "pseudo.csv"
    stale = [tmp_path / ".pseudo.k2j4_x9a.tmp.csv", tmp_path / ".pseudo.summary.abcd1234.tmp.json"]
    neighbour = tmp_path / ".other.k2j4_x9a.tmp.csv"  # another output's, maybe being written now
    for path in (*stale, neighbour):
        path.write_text("half")
    label(teacher, [scan_pool(synthetic_root / "Pool")], out)
    assert not any(p.exists() for p in stale) and neighbour.exists()


def test_cli_label_lists_every_file_not_labeled_in_one_place(teacher, synthetic_root, tmp_path):
    import shutil

    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.training import save_model

    save_model(teacher, tmp_path / "teacher" / "model.keras")
    pool = synthetic_root / "Pool"
    shutil.copy(synthetic_root / "Labeled" / "img_1.jpg", pool / "copy_of_labeled.jpg")
    for k in range(3):
        (pool / f"broken_{k}.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "tables" / "pseudo.csv"
    result = CliRunner().invoke(main, ["label", "--model", str(tmp_path / "teacher"), "--root", str(synthetic_root),
                                       "--pool", str(pool), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(sidecar(out, "skipped"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "pool", "reason", "detail"]
    reasons = {Path(r["image"]).name: r["reason"] for r in rows}
    assert reasons == {"copy_of_labeled.jpg": "excluded as near-duplicate",
                       **{f"broken_{k}.png": "unreadable at scan" for k in range(3)}}
    assert all(r["detail"] for r in rows)
    summary = json.loads(sidecar(out, "summary").read_text())
    assert summary["skipped"] == 3 and summary["not_labeled"]["total"] == 4
    # The pool line and the summary line count the same files.
    assert "skipped 3" in result.output
    assert "not labeled 4: 3 unreadable (3 at scan, 0 at decode), 1 excluded" in result.output
    assert "pseudo.skipped.csv" in result.output


def test_files_unreadable_at_decode_join_the_same_list(teacher, pool_with_corrupt_file, tmp_path):
    out = tmp_path / "pseudo.csv"
    label(teacher, [pool_with_corrupt_file], out)
    with open(sidecar(out, "skipped"), newline="") as f:
        [row] = list(csv.DictReader(f))
    assert Path(row["image"]).name == "corrupt.jpg" and row["reason"] == "unreadable at decode"
    summary = json.loads(sidecar(out, "summary").read_text())
    assert summary["skipped"] == 1 and summary["not_labeled"]["unreadable at decode"] == 1
