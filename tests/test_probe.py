"""The feature-space baselines' shared pieces."""


def test_cv_folds_shrink_to_the_smallest_class_but_never_below_two():
    from pseudolabel.probe import cv_folds

    assert cv_folds([40, 12]) == 5
    assert cv_folds([40, 3]) == 3
    assert cv_folds([9, 1]) == 2
    assert cv_folds([9, 9, 9], folds=10) == 9


def test_choose_by_cv_scores_every_candidate_on_every_fold_as_fitting_them_one_by_one():
    """The (candidate, fold) fits run in threads; the scores are those of a plain loop, in order."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from pseudolabel.probe import choose_by_cv

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 5)) + y[:, None] * 0.8
    pool = rng.normal(size=(40, 5))
    seen = []

    def fit(xs, ys, pool_x, c):
        seen.append(c)
        assert pool_x is pool
        return LogisticRegression(C=c).fit(xs, ys)

    best, scores = choose_by_cv(x, y, pool, fit, [0.001, 1.0, 0.01], cv=3, seed=4)
    expected = {}
    for c in (0.001, 1.0, 0.01):
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=4).split(x, y)
        expected[c] = np.mean([roc_auc_score(y[h], LogisticRegression(C=c).fit(x[f], y[f]).predict_proba(x[h])[:, 1])
                               for f, h in folds])
    assert sorted(seen) == sorted([0.001, 1.0, 0.01] * 3)
    assert list(scores) == [0.001, 1.0, 0.01] and scores == expected
    assert best == max(expected, key=expected.get)
