"""Selection that does not drift: distribution alignment, FlexMatch / FreeMatch thresholds, a
per-class keep fraction and balancing to the labeled prior, each against today's balancing on
synthetic probability tables."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pseudolabel.config import ConfigError, PseudoConfig, load_experiment
from pseudolabel.pseudolabels import (
    PseudoLabelError,
    PseudoLabelTable,
    align_to_prior,
    allocate,
    class_thresholds,
    describe_selection,
    ineffective_threshold,
    keep_most_confident,
    labeled_prior,
    select_pseudo_labels,
)

NAMES = ["old", "modern"]


def drifting_table(n: int = 1000, modern_share: float = 0.3, seed: int = 0) -> PseudoLabelTable:
    """A binary pool whose teacher calls `modern_share` of it modern, less surely than old."""
    rng = np.random.default_rng(seed)
    modern = rng.uniform(size=n) < modern_share
    p_modern = np.where(modern, rng.uniform(0.5, 0.8, n), rng.uniform(0.0, 0.5, n))
    probs = np.stack([1 - p_modern, p_modern], axis=1).astype(np.float32)
    return PseudoLabelTable([f"/pool/{i}.jpg" for i in range(n)], ["pool"] * n, ["0" * 64] * n, probs, NAMES)


def modern_share(report: dict, stage: str = "selected") -> float:
    counts = report[stage]["per_class"]
    return counts["modern"] / sum(counts.values())


PRIOR = np.array([0.6, 0.4])


def test_todays_balancing_makes_the_shares_equal_and_prior_balancing_makes_them_the_prior():
    table = drifting_table()
    _, _, today = select_pseudo_labels(table, threshold=0.3, balance=True)
    assert abs(modern_share(today, "before") - 0.3) < 0.05
    assert modern_share(today) == 0.5                      # 10 points off a 40% prior
    paths, _, prior = select_pseudo_labels(table, threshold=0.3, balance="prior", prior=PRIOR)
    assert abs(modern_share(prior) - 0.4) < 0.001
    # as few rows as keep every image: old (more than its share) once each, modern repeated
    assert prior["selected"]["unique_images"] == len(table)
    old = [p for p in paths if table.predicted[int(p[6:-4])] == 0]
    assert len(set(old)) == len(old) == prior["before"]["per_class"]["old"]
    assert prior["labeled_prior"] == {"old": 0.6, "modern": 0.4}
    capped = select_pseudo_labels(table, threshold=0.3, balance="prior", per_class=100, prior=PRIOR)[2]
    assert capped["selected"]["per_class"] == {"old": 120, "modern": 80}


def test_equal_is_true_and_false_keeps_the_argmax_shares():
    table = drifting_table(200)
    assert select_pseudo_labels(table, balance="equal", seed=1)[0] == select_pseudo_labels(table, balance=True, seed=1)[0]
    _, _, report = select_pseudo_labels(table, balance=False)
    assert report["selected"]["per_class"] == report["before"]["per_class"]


def test_allocate_shares_out_the_total_exactly_and_skips_empty_classes():
    assert allocate(np.array([70, 30]), 0).tolist() == [70, 70]
    assert allocate(np.array([70, 30]), 0, prior=[0.5, 0.5]).tolist() == [70, 70]   # equal = a uniform prior
    assert allocate(np.array([70, 30]), 0, prior=[0.6, 0.4]).tolist() == [70, 47]   # 117 rows: 70 / 117 = 0.6
    assert allocate(np.array([20, 30]), 0, prior=[0.6, 0.4]).tolist() == [45, 30]
    assert allocate(np.array([70, 30]), 50, prior=[0.6, 0.4]).tolist() == [60, 40]
    rows = allocate(np.array([5, 0, 3]), 7, prior=[0.2, 0.5, 0.3])
    assert rows.tolist() == [8, 0, 13] and rows.sum() == 21       # class 1 has no rows: its share goes to the others
    assert allocate(np.array([3, 3, 3]), 1, prior=[1 / 3] * 3).sum() == 3


def test_distribution_alignment_moves_the_argmax_shares_towards_the_prior():
    table = drifting_table(modern_share=0.25)
    aligned = align_to_prior(table.probs, PRIOR)
    np.testing.assert_allclose(aligned.sum(axis=1), 1.0, rtol=1e-5)
    # one step of ReMixMatch's rule: the mean prediction moves towards the prior (not onto it)
    assert abs(aligned.mean(axis=0)[1] - 0.4) < abs(table.probs.mean(axis=0)[1] - 0.4)
    np.testing.assert_allclose(aligned[0] / aligned[0].sum(),
                               table.probs[0] * PRIOR / table.probs.mean(axis=0) / (table.probs[0] * PRIOR
                                                                                    / table.probs.mean(axis=0)).sum(),
                               rtol=1e-5)
    _, targets, report = select_pseudo_labels(table, threshold=0.0, balance=False, align="prior", prior=PRIOR)
    before, after = modern_share(report, "before"), modern_share(report, "aligned")
    assert before < 0.3 and abs(after - 0.4) < abs(before - 0.4)
    np.testing.assert_allclose(targets, aligned, rtol=1e-5)          # the student trains on the aligned targets
    assert report["settings"]["align"] == "prior"


def test_flexmatch_lowers_the_threshold_of_the_class_with_fewer_confident_images():
    table = drifting_table()
    confidence, predicted = table.confidence, table.predicted
    thresholds = class_thresholds(table.probs, "flexmatch", 0.7)
    sigma = np.array([((confidence >= 0.7) & (predicted == c)).sum() for c in (0, 1)], float)
    beta = sigma / sigma.max()
    np.testing.assert_allclose(thresholds, beta / (2 - beta) * 0.7, rtol=1e-6)
    assert thresholds[0] == pytest.approx(0.7) and thresholds[1] < 0.7
    _, _, fixed = select_pseudo_labels(table, threshold=0.7, balance=False)
    _, _, flex = select_pseudo_labels(table, threshold=0.7, threshold_rule="flexmatch", balance=False)
    assert modern_share(flex) > modern_share(fixed)   # a fixed threshold drops the unsure minority: drift
    assert flex["thresholds"]["modern"] == pytest.approx(thresholds[1], abs=1e-6)
    # no image reaches tau: every beta is 0, so nothing is removed
    assert class_thresholds(table.probs, "flexmatch", 0.9999).tolist() == [0.0, 0.0]


def test_freematch_thresholds_are_mean_confidence_scaled_by_the_class_mean_probability():
    table = drifting_table()
    thresholds = class_thresholds(table.probs, "freematch", 0.123)   # its own global threshold: 0.123 unused
    local = table.probs.astype(np.float64).mean(axis=0)
    expected = local / local.max() * table.confidence.astype(np.float64).mean()
    np.testing.assert_allclose(thresholds, expected, rtol=1e-6)
    _, _, report = select_pseudo_labels(table, threshold=0.3, threshold_rule="freematch", balance=False)
    assert 0 < report["after_threshold"]["n"] < len(table)            # it removes rows where 0.3 cannot
    assert report["notes"] == []


def test_keep_fraction_takes_the_surest_share_of_every_class():
    table = drifting_table()
    idx = keep_most_confident(table.predicted, table.confidence, 2, 0.5)
    kept = Counter(table.predicted[idx].tolist())
    total = Counter(table.predicted.tolist())
    assert kept == {c: -(-total[c] // 2) for c in total}                      # ceil(n_c / 2) of every class
    for c in (0, 1):  # and the surest ones
        mine = table.confidence[table.predicted == c]
        assert table.confidence[idx][table.predicted[idx] == c].min() >= np.median(mine) - 1e-6
    _, _, report = select_pseudo_labels(table, threshold=0.0, keep_fraction=0.5, balance=False)
    assert abs(modern_share(report) - modern_share(report, "before")) < 0.01   # no drift, unlike a fixed cut
    assert report["after_keep"]["n"] == len(idx)
    assert "surest 0.5 per class" in describe_selection(report)


def test_a_threshold_at_or_below_one_over_k_is_reported_as_doing_nothing():
    table = drifting_table(100)
    _, _, report = select_pseudo_labels(table, threshold=0.3)
    assert report["after_threshold"]["n"] == 100
    assert report["notes"] and "removes nothing" in report["notes"][0] and "1/2" in report["notes"][0]
    assert "note: threshold 0.3 removes nothing" in describe_selection(report)
    assert ineffective_threshold(0.3, "fixed", 3) is not None   # 0.3 < 1/3
    assert ineffective_threshold(0.3, "fixed", 4) is None       # 0.3 > 1/4: can remove a row
    assert ineffective_threshold(0.0, "fixed", 2) is None      # 0 says "no threshold" on purpose
    assert ineffective_threshold(0.5, "flexmatch", 2) is not None
    assert select_pseudo_labels(table, threshold=0.6)[2]["notes"] == []


def test_prior_settings_need_the_prior_and_wrong_values_are_refused():
    table = drifting_table(50)
    with pytest.raises(PseudoLabelError, match="labeled train prior"):
        select_pseudo_labels(table, balance="prior")
    with pytest.raises(PseudoLabelError, match="threshold rule"):
        select_pseudo_labels(table, threshold_rule="adamatch")
    assert labeled_prior([0, 0, 1, 1, 1], 2).tolist() == [0.4, 0.6]


def test_new_pseudo_keys_are_out_of_the_dump_at_their_defaults_so_old_runs_stay_the_same():
    dump = PseudoConfig().model_dump(mode="json")
    assert set(dump) == {"mode", "temperature", "label_smoothing", "threshold", "balance", "per_class", "tta",
                         "batch_size"}
    changed = PseudoConfig(align="prior", balance="prior", threshold_rule="freematch", keep_fraction=0.5)
    assert changed.model_dump(mode="json")["align"] == "prior"
    assert changed.model_dump(mode="json")["keep_fraction"] == 0.5


def test_experiment_pseudo_keys_are_checked_when_read(tmp_path):
    (tmp_path / "e.toml").write_text('output = "o"\n[data]\nroot = "."\nlabels = "l.csv"\n'
                                     '[pseudo]\nbalance = "prior"\nthreshold_rule = "flexmatch"\n')
    assert load_experiment(tmp_path / "e.toml").pseudo.balance == "prior"
    (tmp_path / "bad.toml").write_text('output = "o"\n[data]\nroot = "."\nlabels = "l.csv"\n[pseudo]\nbalance = "yes"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: pseudo.balance"):
        load_experiment(tmp_path / "bad.toml")
    (tmp_path / "bad2.toml").write_text('output = "o"\n[data]\nroot = "."\nlabels = "l.csv"\n[pseudo]\nkeep_fraction = 0\n')
    with pytest.raises(ConfigError, match=r"pseudo.keep_fraction"):
        load_experiment(tmp_path / "bad2.toml")
