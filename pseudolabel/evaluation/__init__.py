"""Evaluation: ROC AUC with bootstrap CIs, paired comparisons (metrics.py), test-time augmentation
(tta.py), plots (plots.py), `test_predictions.csv` (predictions.py). Every public name is
re-exported here, so `from pseudolabel.evaluation import X` works for all of them.

Conventions (docs/ARCHITECTURE.md): binary tasks report the ROC AUC of P(positive class)
(default: the last class); K-class tasks the macro one-vs-rest ROC AUC, never Keras' one-hot
(micro) AUC. TensorFlow and matplotlib are imported inside the functions that need them, so
importing this package (e.g. from the CLI or `report`) stays cheap.
"""

from pseudolabel.evaluation.metrics import (
    EvaluationError,
    accuracy,
    as_labels,
    as_prob_matrix,
    bootstrap_ci,
    bootstrap_distribution,
    delong_auc_covariance,
    delong_test,
    evaluate_predictions,
    paired_auc_difference,
    paired_permutation_test,
    percentile_interval,
    rank_auc,
    require_auc_defined,
    resample_indices,
    roc_auc,
    validated_inputs,
)
from pseudolabel.evaluation.plots import has_epochs, plot_history, plot_label_curve, plot_roc, read_history, roc_curve_points
from pseudolabel.evaluation.predictions import Predictions, read_predictions, write_predictions
from pseudolabel.evaluation.tta import DEFAULT_CROP_FRACTION, TTA_MODES, predict, tta_predictor, tta_views

__all__ = [
    "DEFAULT_CROP_FRACTION", "EvaluationError", "Predictions", "TTA_MODES", "accuracy", "as_labels",
    "as_prob_matrix", "bootstrap_ci", "bootstrap_distribution", "delong_auc_covariance", "delong_test",
    "evaluate_predictions", "paired_auc_difference", "paired_permutation_test", "percentile_interval", "has_epochs", "plot_history",
    "plot_label_curve", "plot_roc", "predict",
    "rank_auc", "read_history", "read_predictions", "require_auc_defined", "resample_indices", "roc_auc",
    "roc_curve_points", "tta_predictor", "tta_views", "validated_inputs", "write_predictions",
]
