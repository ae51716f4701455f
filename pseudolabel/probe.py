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


def cv_folds(class_counts, folds: int = ProbeConfig.model_fields["cv"].default) -> int:
    """Cross-validation folds on a train split with these class counts: `folds`, fewer when the
    smallest class has fewer images (StratifiedKFold needs one per class per fold), never below 2."""
    return max(2, min(int(folds), int(min(class_counts))))


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


def set_head_from_probe(head, classifier) -> None:
    """Make the `head` submodel (BatchNorm -> Dropout -> Dense softmax, `backbones.create_head`)
    compute what the fitted probe pipeline (StandardScaler + logistic regression) computes.

    BatchNorm in inference: (x - mean) / sqrt(var + eps) * gamma + beta; with var = scale**2 and
    gamma = sqrt(scale**2 + eps) / scale it is exactly the scaler's (x - mean) / scale. A binary
    logistic regression's logit z = w.x + b becomes softmax logits (-z/2, z/2), whose softmax is
    (1 - sigmoid(z), sigmoid(z)); a multinomial one maps one to one."""
    scaler, logistic = classifier[0], classifier[-1]
    bn, dense = head.get_layer("head_bn"), head.get_layer("predictions")
    scale = scaler.scale_.astype(np.float64)
    gamma = np.sqrt(scale ** 2 + bn.epsilon) / scale
    bn.set_weights([w.astype(np.float32) for w in (gamma, np.zeros_like(scale), scaler.mean_, scale ** 2)])
    coef, intercept = np.asarray(logistic.coef_, np.float64), np.asarray(logistic.intercept_, np.float64)
    if coef.shape[0] == 1:   # binary: one logit for class 1
        coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    dense.set_weights([coef.T.astype(np.float32), intercept.astype(np.float32)])


def feature_classifier_model(backbone, model_config: ModelConfig, classifier, num_classes: int):
    """The Keras classifier (`backbone` + a head) that computes what `classifier` (a fitted
    StandardScaler + logistic regression on the features of this very backbone model) computes on
    images, so a feature-space classifier can pseudo-label pools like any teacher."""
    from pseudolabel.backbones import assemble_classifier

    model = assemble_classifier(backbone, model_config.backbone, num_classes, dropout=model_config.dropout)
    set_head_from_probe(model.get_layer("head"), classifier)
    return model


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


# --------------------------------------------------------------------------- feature-space self-training


def fit_self_training(train_x, train_y, pool_x, *, C: float, threshold: float, seed: int = 0):
    """scikit-learn's SelfTrainingClassifier around the probe's standardized logistic regression
    (C fixed), on the labeled rows plus the pool's rows (label -1: unlabeled)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import SelfTrainingClassifier

    base = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    x = np.concatenate([train_x, pool_x]) if len(pool_x) else np.asarray(train_x)
    y = np.concatenate([np.asarray(train_y), -np.ones(len(pool_x), dtype=np.int64)])
    return SelfTrainingClassifier(base, threshold=threshold).fit(x, y)


def choose_by_cv(train_x, train_y, pool_x, fit, candidates, *, cv: int, seed: int) -> tuple:
    """The candidate with the best mean ROC AUC over stratified folds of the labeled train split;
    `fit(x, y, pool_x, candidate)` returns a fitted classifier (the pool joins every fold's
    training, unlabeled). Returns (candidate, {candidate: mean AUC}).

    The (candidate, fold) fits run in threads, one per core: each is a single-threaded solver over
    the whole pool (seconds to a minute apiece), and scikit-learn's NumPy/SciPy work releases the
    GIL. Threads, not processes: they give the same floats as fitting one by one (worker processes
    rounded differently)."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(train_x, train_y))
    n_classes = len(np.unique(train_y))

    def fold_auc(candidate, fit_rows, held_out) -> float:
        from sklearn.metrics import roc_auc_score

        probs = fit(train_x[fit_rows], train_y[fit_rows], pool_x, candidate).predict_proba(train_x[held_out])
        return (roc_auc_score(train_y[held_out], probs[:, 1]) if n_classes == 2
                else roc_auc_score(train_y[held_out], probs, multi_class="ovr", average="macro"))

    tasks = [(candidate, fit_rows, held_out) for candidate in candidates for fit_rows, held_out in folds]
    aucs = Parallel(n_jobs=-1, backend="threading")(delayed(fold_auc)(*task) for task in tasks)
    scores = {candidate: float(np.mean(aucs[i * len(folds):(i + 1) * len(folds)]))
              for i, candidate in enumerate(candidates)}
    return max(scores, key=scores.get), scores


def choose_threshold(train_x, train_y, pool_x, *, C: float, thresholds, cv: int, seed: int) -> tuple[float, dict]:
    """Self-training's confidence threshold by `choose_by_cv`. Returns (threshold, scores)."""
    def fit(x, y, pool, threshold):
        return fit_self_training(x, y, pool, C=C, threshold=threshold, seed=seed)

    return choose_by_cv(train_x, train_y, pool_x, fit, [float(t) for t in thresholds], cv=cv, seed=seed)


def fit_label_spreading(train_x, train_y, pool_x, *, n_neighbors: int):
    """scikit-learn's LabelSpreading (k-nearest-neighbour graph) on standardized features of the
    labeled rows plus the pool's (label -1)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import LabelSpreading

    x = np.concatenate([train_x, pool_x]) if len(pool_x) else np.asarray(train_x)
    y = np.concatenate([np.asarray(train_y), -np.ones(len(pool_x), dtype=np.int64)])
    return make_pipeline(StandardScaler(), LabelSpreading(kernel="knn", n_neighbors=n_neighbors, max_iter=1000)).fit(x, y)


class SelfTrainingRun(ProbeRun):
    """The probe, self-trained on the pools' features (threshold by CV on train): the cheapest
    semi-supervised method a user could run instead of the deep pipeline, and a baseline to beat."""

    kind = "self_training"

    def __init__(self, config, task, run_dir, *, origin: dict, pool_paths=(), exports_model: bool = False,
                 **options):
        super().__init__(config, task, run_dir, **options)
        self.origin = origin            # the pools (configs): part of what this run is
        self.pool_paths = list(pool_paths)
        self.exports_model = exports_model   # model.keras (backbone + this classifier): it can teach

    def resolved_config(self) -> dict:
        config = {**self.config.model_dump(mode="json"), "fit_on": "train + pools (unlabeled)",
                  "classifier": f"SelfTrainingClassifier({CLASSIFIER})", "pools": self.origin}
        if self.exports_model:   # absent otherwise, so runs made before the option still match
            config["exports_model"] = True
        return config

    def save(self, backbone) -> None:
        if self.exports_model:
            from pseudolabel.lifecycle import MODEL_FILE
            from pseudolabel.training import save_model

            save_model(feature_classifier_model(backbone, self.config.model, self.classifier.estimator_,
                                                len(self.task.class_map.names)), self.file(MODEL_FILE))

    def feature_key(self, backbone) -> dict:
        import hashlib

        pools = hashlib.sha1("\n".join(map(str, self.pool_paths)).encode()).hexdigest()
        return {**super().feature_key(backbone), "pool_images": pools}

    def compute_features(self, backbone) -> dict[str, np.ndarray]:
        from pseudolabel.features import extract_features
        from pseudolabel.pipeline import make_dataset

        pool = make_dataset(self.pool_paths, image_size=self.image_size, batch_size=self.batch_size, shuffle=False,
                            augment=None, cache=None, repeat=False, on_error="skip")
        return {**super().compute_features(backbone), "pool_x": extract_features(backbone, pool, verbose=self.verbose)}

    def fit(self, backbone) -> dict:
        from pseudolabel.features import FEATURES_NPZ, cached_features

        if not self.pool_paths:
            raise ValueError(f"{self.kind} needs the pools' images (pool_paths)")
        started = time.perf_counter()
        self.features, reused = cached_features(self.file(FEATURES_NPZ), self.feature_key(backbone),
                                                lambda: self.compute_features(backbone))
        features_s = time.perf_counter() - started
        fit_started = time.perf_counter()
        summary = self.fit_classifier(self.features["train_x"], self.features["train_y"], self.features["pool_x"])
        return {self.kind: {**summary, "pool_images": int(len(self.features["pool_x"]))},
                "timings": {"features_s": round(features_s, 2), "features_reused": reused,
                            "fit_s": round(time.perf_counter() - fit_started, 2)}}

    def fit_classifier(self, x, y, pool_x) -> dict:
        """Fit `self.classifier` on the labeled rows and the pool's; returns what was chosen."""
        c = probe_summary(fit_probe(x, y, cv=self.config.cv, seed=self.seed)[-1], self.config.cv)["C"]
        threshold, scores = choose_threshold(x, y, pool_x, C=c, thresholds=self.config.thresholds,
                                             cv=self.config.cv, seed=self.seed)
        self.classifier = fit_self_training(x, y, pool_x, C=c, threshold=threshold, seed=self.seed)
        return {"C": c, "threshold": threshold, "cv_roc_auc_by_threshold": scores,
                "pseudo_labeled": int((self.classifier.labeled_iter_[len(x):] > 0).sum()),
                "iterations": int(self.classifier.n_iter_)}


class LabelSpreadingRun(SelfTrainingRun):
    """scikit-learn's LabelSpreading over the same standardized features and pools (a graph-based
    semi-supervised baseline; its k nearest neighbours chosen by CV on train). Not exported as a
    Keras model: it predicts through its graph, not a linear head."""

    kind = "label_spreading"

    def resolved_config(self) -> dict:
        return {**self.config.model_dump(mode="json"), "fit_on": "train + pools (unlabeled)",
                "classifier": "StandardScaler + LabelSpreading(kernel=knn)", "pools": self.origin}

    def save(self, backbone) -> None:
        pass

    def fit_classifier(self, x, y, pool_x) -> dict:
        def fit(fx, fy, pool, k):
            return fit_label_spreading(fx, fy, pool, n_neighbors=k)

        k, scores = choose_by_cv(x, y, pool_x, fit, list(self.config.n_neighbors), cv=self.config.cv, seed=self.seed)
        self.classifier = fit(x, y, pool_x, k)
        return {"n_neighbors": k, "cv_roc_auc_by_n_neighbors": scores}
