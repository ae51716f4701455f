"""The linear-probe baseline: frozen backbone features -> standardized logistic regression.

    metrics = run_probe(task, "runs/probe", backbone="efficientnet_lite0")

Decision: the probe is fitted on the TRAIN split only, with C chosen by stratified `cv`-fold
cross-validation (ROC AUC) inside train; val is not used for fitting or selection, only scored
(metrics["val"]). So the probe learns from exactly the images the teacher's weights learn from,
and its val/test numbers compare with the teacher's. Its run directory has the files every run
has (`lifecycle`), plus `features.npz` (train, val and test features), and no model.keras.
"""

from __future__ import annotations

import inspect
import time
from typing import Sequence

import numpy as np

from pseudolabel.config import ModelConfig, ProbeConfig
from pseudolabel.lifecycle import TrainingRun, task_subset

CLASSIFIER = "StandardScaler + LogisticRegressionCV(scoring=roc_auc)"


def run_probe(task, run_dir, *, backbone: str = "efficientnet_lite0", image_size: int | None = None,
              weights="imagenet", cv: int = 5, seed: int = 0, batch_size: int = 32, verbose="auto",
              restart: bool = False) -> dict:
    """Fit (or just report) the linear probe on `task`; returns the metrics."""
    config = ProbeConfig(model=ModelConfig(backbone=backbone, image_size=image_size, weights=weights),
                         cv=cv, seed=seed, batch_size=batch_size)
    return ProbeRun(config, task, run_dir, verbose=verbose, restart=restart).run()


def fit_probe(train_x, train_y, *, cv: int = 5, seed: int = 0, Cs: int | Sequence[float] = 20):
    """StandardScaler + L2 LogisticRegressionCV, C chosen by stratified k-fold CV (ROC AUC) on these rows."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = len(np.unique(train_y))
    options = {}
    accepted = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" in accepted:   # scikit-learn >= 1.8: say what older versions did
        options.update(l1_ratios=(0.0,), use_legacy_attributes=False)
    classifier = LogisticRegressionCV(
        Cs=Cs, cv=StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed),
        scoring="roc_auc" if n_classes == 2 else "roc_auc_ovr", max_iter=5000, **options,
    )
    return make_pipeline(StandardScaler(), classifier).fit(train_x, train_y)


def probe_summary(classifier, cv: int) -> dict:
    """Chosen C and its mean cross-validated ROC AUC (legacy and new scikit-learn attributes)."""
    scores = classifier.scores_
    scores = np.asarray(next(iter(scores.values())) if isinstance(scores, dict) else scores)
    per_c = scores.reshape(scores.shape[0], -1).mean(axis=0)   # folds x (l1 ratios x) Cs
    return {"C": float(np.ravel(classifier.C_)[0]), "cv": cv, "cv_roc_auc": float(per_c.max()), "fit_on": "train"}


class ProbeRun(TrainingRun):
    kind = "probe"

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def tta(self) -> str:
        return "none"

    def resolved_config(self) -> dict:
        return {**self.config.model_dump(mode="json"), "fit_on": "train", "classifier": CLASSIFIER}

    def needs_validation(self) -> bool:
        return False   # C is chosen by cross-validation inside train

    def build(self):
        from pseudolabel.backbones import create_backbone

        m = self.config.model
        return create_backbone(m.backbone, image_size=m.image_size, weights=m.weights)

    def fit(self, backbone) -> dict:
        from pseudolabel.features import FEATURES_NPZ, cached_features

        started = time.perf_counter()
        self.features, reused = cached_features(self.file(FEATURES_NPZ), self.feature_key(backbone),
                                                lambda: self.compute_features(backbone))
        features_s = time.perf_counter() - started
        fit_started = time.perf_counter()
        self.classifier = fit_probe(self.features["train_x"], self.features["train_y"], cv=self.config.cv,
                                    seed=self.config.seed)
        fit_s = time.perf_counter() - fit_started
        classes = self.classifier[-1].classes_
        if len(classes) != len(self.task.class_map.names):
            raise ValueError(f"the train split holds classes {classes.tolist()} only, "
                             f"the task has {len(self.task.class_map.names)}")
        return {"probe": probe_summary(self.classifier[-1], self.config.cv),
                "timings": {"features_s": round(features_s, 2), "features_reused": reused, "fit_s": round(fit_s, 2)}}

    def feature_key(self, backbone) -> dict:
        from pseudolabel.features import weights_fingerprint

        return {"backbone": self.config.model.backbone, "image_size": self.image_size,
                "weights": weights_fingerprint(backbone), "split_hash": self.task.split.hash}

    def compute_features(self, backbone) -> dict[str, np.ndarray]:
        from pseudolabel.features import extract_features, plain_dataset

        out = {}
        for name in ("train", "val", "test"):
            paths, y = task_subset(self.task, name)
            out[f"{name}_x"] = (extract_features(backbone, plain_dataset(paths, image_size=self.image_size,
                                                                         batch_size=self.batch_size),
                                                 verbose=self.verbose)
                                if paths else np.zeros((0, 0), np.float32))
            out[f"{name}_y"] = y
        return out

    def save(self, model) -> None:
        pass   # nothing to save: the probe is refitted from features.npz in seconds

    def predict(self, model, subset: str) -> np.ndarray:
        return self.classifier.predict_proba(self.features[f"{subset}_x"])
