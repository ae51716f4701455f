"""The feature-space baselines' shared pieces."""


def test_cv_folds_shrink_to_the_smallest_class_but_never_below_two():
    from pseudolabel.probe import cv_folds

    assert cv_folds([40, 12]) == 5
    assert cv_folds([40, 3]) == 3
    assert cv_folds([9, 1]) == 2
    assert cv_folds([9, 9, 9], folds=10) == 9
