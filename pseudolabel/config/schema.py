"""Typed schemas of recipes and experiments (pydantic), validated when a file is read.

Every table has a schema: unknown keys, wrong types ("3e-3" for a number) and values out of range
or not allowed are errors before any model is built. `config.loading` turns them into one line
naming the file, the key and what is allowed. A validated config is immutable; its
`model_dump(mode="json")` is what a run saves as `config.json` and compares on resume.

Relative paths are resolved against the folder of the file that names them (passed as the
validation context `base`), so a config means the same from any directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer, model_validator

from pseudolabel.model_selection import DEFAULT_MARGIN

TTA = Literal["none", "flip", "ten_crop"]
CLASS_WEIGHT = Literal["balanced", "none"]
MIXED_PRECISION = Literal["auto", "mixed_float16", "float32"]
NAMED_CLASS_MAPS = Literal["identity", "house_rooms"]

Rate = Annotated[float, Field(ge=0.0, lt=1.0)]           # dropout, stochastic depth, smoothing
Positive = Annotated[float, Field(gt=0.0)]               # learning rates, temperatures, ratios
Count = Annotated[int, Field(ge=0)]                      # epochs, patience, seeds
AtLeastOne = Annotated[int, Field(ge=1)]                 # batch sizes, views, blocks


# Fields the loader sets (never written in a file): not offered as "known keys" in errors.
LOADER_FIELDS = frozenset({"kind", "path", "teacher_recipe", "student_recipes"})


class Table(BaseModel):
    """A config table: unknown keys are errors, no type coercion (a string is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def resolve_path(value: str | None, info: ValidationInfo) -> str | None:
    """`~` expanded; relative to the folder of the file being read (context `base`)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    base = (info.context or {}).get("base")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path.resolve()) if path.is_absolute() else str(path)


def _known(names: list[str], what: str, value: str) -> str:
    if value not in names:
        raise ValueError(f"unknown {what} '{value}' (known: {', '.join(names)})")
    return value


# --------------------------------------------------------------------------- recipes


class ModelConfig(Table):
    """`[model]`: the classifier `backbones.create_model` builds. `image_size` defaults to the
    backbone's own resolution (its spec is the one source); `weights`: "imagenet", "none"
    (random initialisation) or a weights file."""

    backbone: str = "efficientnet_lite0"
    image_size: Optional[Annotated[int, Field(ge=16)]] = None
    weights: Optional[str] = "imagenet"
    dropout: Rate = 0.5
    drop_connect_rate: Rate = 0.2

    @field_validator("backbone")
    @classmethod
    def _registered_backbone(cls, value: str) -> str:
        from pseudolabel.backbones import list_backbones

        return _known(list_backbones(), "backbone", value)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.lower() in ("none", "random", ""):
            return None   # TOML has no null: "none" means random initialisation
        if value == "imagenet":
            return value
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _default_image_size(self) -> "ModelConfig":
        if self.image_size is None:
            from pseudolabel.backbones import get_spec

            object.__setattr__(self, "image_size", get_spec(self.backbone).image_size)
        return self


def registered_augment(value: str) -> str:
    from pseudolabel.augment import list_augments

    return _known(list_augments(), "augmentation", value)


class TrainCommon(Table):
    """`[train]` keys of teachers and students. Under a tf.distribute strategy `batch_size` is per
    replica and the learning rates are multiplied by the replicas unless `scale_lr` is false.
    `mixed_precision`: "auto" (mixed_float16 on a GPU, float32 on a CPU), "mixed_float16", "float32"."""

    seed: Count = 0
    scale_lr: bool = True
    mixed_precision: MIXED_PRECISION = "auto"
    tta: TTA = "none"            # test-time augmentation at evaluation
    class_weight: CLASS_WEIGHT = "balanced"


class TeacherTrain(TrainCommon):
    """`head_init`: "random", or "probe": the head starts as the linear probe's solution on the
    cached train features (its BatchNorm standardizes as the probe's scaler does, its Dense holds
    the logistic regression), so phase 1 starts where the probe ends; `phase1_epochs` may be 0.
    `select`: what picks the best epoch over both phases (and stops early): "val_loss" or
    "val_auc" (macro one-vs-rest ROC AUC on val; the starting head counts as a candidate).
    `phase2_margin`: phase 2 replaces phase 1's best only when it beats it on `select` by at least
    this much (0: any gain). With a few dozen validation images a fine-tuned epoch "wins" by noise;
    a margin keeps the phase-1 head (with `head_init = "probe"`, the probe) unless the gain is real.
    `augment_magnitude`: the policy's magnitude (0-30; "randaugment" at 0 is crops and flips only),
    so a teacher can get the very noise a student recipe gets (`[noise] randaugment_magnitude`)."""

    batch_size: AtLeastOne = 32
    augment: str = "teacher"      # augmentation policy (pseudolabel.augment) of phase 2
    augment_magnitude: Annotated[float, Field(ge=0.0, le=30.0)] = 0.0
    feature_views: AtLeastOne = 1  # phase 1: 1 clean + (n-1) augmented cached feature sets
    phase1_epochs: Count = 60
    phase1_lr: Positive = 1e-3
    phase1_patience: Count = 8
    phase2_epochs: Count = 0       # 0: no fine-tuning of the top blocks
    phase2_lr: Positive = 1e-5
    phase2_patience: Count = 5
    phase2_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    unfreeze_blocks: AtLeastOne = 2
    head_init: Literal["random", "probe"] = "random"
    select: Literal["val_loss", "val_auc"] = "val_loss"

    @field_validator("augment")
    @classmethod
    def _registered_augment(cls, value: str) -> str:
        return registered_augment(value)

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler) -> dict:
        # Keys added after runs were recorded are left out at their defaults, so every recorded
        # teacher config (and every student's copy of its teacher's) stays the same.
        return without_added_defaults(handler(self), TEACHER_KEYS_ADDED)


TEACHER_KEYS_ADDED = {"augment_magnitude": 0.0, "phase2_margin": 0.0}


def without_added_defaults(data: dict, added: dict) -> dict:
    """`data` (a table's dump) without the keys of `added` that are at the default they were
    added with: configs recorded before a key existed dump the same as before."""
    return {k: v for k, v in data.items() if not (k in added and v == added[k])}


class StudentTrain(TrainCommon):
    batch_size: AtLeastOne = 16    # labeled batch; the pseudo-labeled batch is ratio x this
    epochs: Count = 10
    lr: Positive = 1e-4
    patience: Count = 4
    unlabeled_ratio: Positive = 1.0
    # None: an epoch covers the larger of the labeled and unlabeled sets once; N: N steps an epoch,
    # so students of different algorithms (pools, tables) can get the same number of steps
    steps_per_epoch: Optional[AtLeastOne] = None
    # "ratio": = unlabeled_ratio (the official loss: every image weighs the same), else a weight >= 0
    unlabeled_weight: Union[Literal["ratio"], Annotated[float, Field(ge=0.0)]] = "ratio"
    freeze_bn: bool = True
    # "all": the whole backbone trains (the paper); N: only the top N blocks (cheaper on a CPU)
    unfreeze_blocks: Union[Literal["all"], AtLeastOne] = "all"
    pseudo_cache_mb: Annotated[float, Field(ge=0.0)] = 2048.0  # decoded pseudo-labeled images in memory up to this

    @property
    def resolved_unlabeled_weight(self) -> float:
        return float(self.unlabeled_ratio if self.unlabeled_weight == "ratio" else self.unlabeled_weight)


class Noise(Table):
    """`[noise]`: the student's input noise, on labeled and pseudo-labeled images alike."""

    augment: str = "randaugment"
    randaugment_ops: Annotated[int, Field(ge=0, le=14)] = 2
    randaugment_magnitude: Annotated[float, Field(ge=0.0, le=30.0)] = 6.0

    @field_validator("augment")
    @classmethod
    def _registered_augment(cls, value: str) -> str:
        return registered_augment(value)


def registered_algorithm(value: str) -> str:
    from pseudolabel.algorithms import list_algorithms

    return _known(list_algorithms(), "algorithm", value)


class AlgorithmConfig(Table):
    """`[algorithm]` of a student recipe: which training algorithm (`name`, or the one-line form
    `algorithm = "fixmatch"` at the top of the recipe) and, for the online ones (`pseudolabel.
    algorithms`), their hyper-parameters. The unlabeled batch is `mu` x `train.batch_size`; the
    loss is labeled CE + lambda_u x the masked unlabeled CE, lambda_u ramped linearly from 0 over
    the first `warmup_steps` steps. `threshold`: the confidence a pseudo-label needs (FlexMatch:
    its upper bound per class; FreeMatch: unused, its thresholds adapt). `temperature` sharpens
    the weak view's probabilities (p^(1/T), renormalised) before confidence and argmax (1: as
    published). `ema_decay` > 0 keeps an exponential moving average of the weights, which is what
    is validated, evaluated and saved (0: off). `threshold_momentum`: FreeMatch's EMA of the
    confidences; `threshold_warmup`: FlexMatch's normalisation by the not-yet-confident images;
    `fairness_weight`: FreeMatch's fairness loss weight w_f (the paper: 0.01; 0, the default: off,
    so a run started before the key existed resumes as what it was)."""

    name: str = "noisy_student"
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    temperature: Positive = 1.0
    mu: Positive = 7.0
    lambda_u: Annotated[float, Field(ge=0.0)] = 1.0
    warmup_steps: Count = 0
    ema_decay: Rate = 0.0
    threshold_momentum: Rate = 0.999
    threshold_warmup: bool = True
    fairness_weight: Annotated[float, Field(ge=0.0)] = 0.0
    weak_augment: str = "weak"
    strong_augment: str = "strong"

    @field_validator("name")
    @classmethod
    def _registered_algorithm(cls, value: str) -> str:
        return registered_algorithm(value)

    @field_validator("weak_augment", "strong_augment")
    @classmethod
    def _registered_augment(cls, value: str) -> str:
        return registered_augment(value)

    @model_validator(mode="after")
    def _online_keys_only_online(self) -> "AlgorithmConfig":
        from pseudolabel.algorithms import is_online

        extra = sorted(self.model_fields_set - {"name"})
        if extra and not is_online(self.name):
            raise ValueError(f"{', '.join(extra)}: only for online algorithms, not '{self.name}' (set "
                             "[pseudo] and [train] for it)")
        if self.fairness_weight > 0 and self.name != "freematch":
            raise ValueError(f"fairness_weight: FreeMatch's fairness loss, not for '{self.name}'")
        return self

    @property
    def online(self) -> bool:
        from pseudolabel.algorithms import is_online

        return is_online(self.name)


class Recipe(Table):
    """A model recipe file (`teachers/*.toml`, `students/*.toml`)."""

    kind: str
    path: Optional[str] = None    # the recipe file, recorded for provenance
    model: ModelConfig = ModelConfig()

    @classmethod
    def expand_shorthands(cls, values: Any) -> Any:
        """`values` (a file's table or an override) with its one-line forms written as tables, so
        that overrides merge key by key into the file whichever form either of them uses."""
        return values


class TeacherRecipe(Recipe):
    kind: Literal["teacher"] = "teacher"
    train: TeacherTrain = TeacherTrain()


class StudentRecipe(Recipe):
    """`algorithm`: a name (`algorithm = "fixmatch"`) or an `[algorithm]` table (`AlgorithmConfig`).
    Online algorithms use `[train]` (not its unlabeled_ratio / unlabeled_weight: `mu`, `lambda_u`)
    and `[noise]`'s RandAugment ops and magnitude for their strong view."""

    kind: Literal["student"] = "student"
    algorithm: AlgorithmConfig = AlgorithmConfig()
    model: ModelConfig = ModelConfig(dropout=0.2)
    train: StudentTrain = StudentTrain()
    noise: Noise = Noise()

    @classmethod
    def expand_shorthands(cls, values: Any) -> Any:
        # `algorithm = "fixmatch"` is `[algorithm] name = "fixmatch"`: then `--set algorithm.threshold=0.9`
        # keeps the name, and `--set algorithm=flexmatch` keeps a table's other hyper-parameters.
        if isinstance(values, dict) and isinstance(values.get("algorithm"), str):
            values = {**values, "algorithm": {"name": values["algorithm"]}}
        return values

    @model_validator(mode="before")
    @classmethod
    def _algorithm_by_name(cls, values: Any) -> Any:
        return cls.expand_shorthands(values)

    @model_serializer(mode="wrap")
    def _without_default_algorithm(self, handler) -> dict:
        # Noisy Student as before the key existed: left out, so every recorded config stays the same.
        data = handler(self)
        if data.get("algorithm") == AlgorithmConfig().model_dump(mode="json"):
            data.pop("algorithm")
        return data


RECIPES: dict[str, type[Recipe]] = {"teacher": TeacherRecipe, "student": StudentRecipe}


class ProbeConfig(Table):
    """The linear probe: frozen backbone features -> standardized logistic regression (C by CV)."""

    kind: Literal["probe"] = "probe"
    model: ModelConfig = ModelConfig()
    cv: Annotated[int, Field(ge=2)] = 5
    seed: Count = 0
    batch_size: AtLeastOne = 32


class SelfTrainingConfig(ProbeConfig):
    """The feature-space semi-supervised baseline: scikit-learn's SelfTrainingClassifier around
    the probe's logistic regression, on the same frozen features plus the pools' features; its
    confidence threshold is chosen by cross-validation on the labeled train split."""

    kind: Literal["self_training"] = "self_training"
    thresholds: Annotated[list[Annotated[float, Field(gt=0.0, lt=1.0)]], Field(min_length=1)] = [0.7, 0.8, 0.9, 0.95]


class LabelSpreadingConfig(ProbeConfig):
    """The graph-based baseline: scikit-learn's LabelSpreading (knn kernel) on the standardized
    frozen features of train + pools; `n_neighbors` chosen by cross-validation on train."""

    kind: Literal["label_spreading"] = "label_spreading"
    n_neighbors: Annotated[list[AtLeastOne], Field(min_length=1)] = [5, 10, 20]


class Baselines(Table):
    """`[baselines]`: the supervised and shallow semi-supervised runs every experiment reports
    beside the teacher, on the teacher's backbone features (seconds, not minutes)."""

    probe: bool = True
    self_training: bool = True
    label_spreading: bool = False
    # The first Noisy Student recipe on the labeled train split alone (no pool, no pseudo-labels;
    # its epochs as long as over the pools): did the pool help, or the student's recipe?
    labels_only_student: bool = False


# --------------------------------------------------------------------------- experiments


class PseudoConfig(Table):
    """`[pseudo]`: how the teacher's predictions on the pools become the student's targets
    (`pseudolabels.selection`, in this order):

    1. `align = "prior"`: distribution alignment (ReMixMatch, Berthelot et al. 2020): every row's
       probabilities times (labeled train prior / the pool's mean prediction), renormalised, before
       anything else ("none": the teacher's probabilities as they are).
    2. threshold: keep rows whose top probability is >= their predicted class's threshold.
       `threshold_rule`: "fixed" (`threshold` for every class), "flexmatch" (`threshold` scaled per
       class by how many pool images the class holds above it, Zhang et al. 2021), "freematch"
       (mean confidence of the pool scaled per class by the class's mean probability, Wang et al.
       2023; `threshold` unused). A fixed threshold <= 1/K removes nothing (the top probability of K
       classes is >= 1/K); the selection report says so.
    3. `keep_fraction`: per predicted class, the most confident fraction of what passed (1: all):
       a cut that means the same for two classes as for ten, and takes as much from every class.
    4. `balance`: true / "equal": every predicted class gets `per_class` rows (0: the largest class
       count), the most confident kept, duplicates filling short classes; "prior": the class shares
       of the labeled train split, K x `per_class` rows in all (0: as few as keep every selected
       image), the same way; false: as selected.
    5. targets: `mode` soft (probabilities at `temperature`) or hard (argmax + `label_smoothing`).
    """

    mode: Literal["soft", "hard"] = "soft"  # soft: probabilities at `temperature`; hard: argmax + smoothing
    temperature: Positive = 1.0
    label_smoothing: Rate = 0.1
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3  # drop images whose top probability is below
    threshold_rule: Literal["fixed", "flexmatch", "freematch"] = "fixed"
    keep_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    align: Literal["none", "prior"] = "none"
    balance: Union[bool, Literal["equal", "prior"]] = True   # true = "equal"
    per_class: Count = 0          # 0: the largest class count after thresholding
    tta: TTA = "none"
    batch_size: AtLeastOne = 64

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler) -> dict:
        # Keys added after runs were recorded are left out at their defaults, so every config that
        # holds a [pseudo] dump (a student's, its teacher's inside the next round's) stays the same.
        return without_added_defaults(handler(self), PSEUDO_KEYS_ADDED)


PSEUDO_KEYS_ADDED = {"threshold_rule": "fixed", "keep_fraction": 1.0, "align": "none"}


class ClassesTable(Table):
    """`[data.classes]`: class names in index order; `map` raw label -> class name (default: each
    name is its own raw label, the K-class form); `positive`: the class whose ROC AUC a binary
    task reports."""

    names: Annotated[list[str], Field(min_length=2)]
    map: Optional[dict[str, str]] = None
    positive: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "ClassesTable":
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct, got {self.names}")
        unknown = sorted(set((self.map or {}).values()) - set(self.names))
        if unknown:
            raise ValueError(f"map names classes {unknown} that are not in names {self.names}")
        if self.positive is not None and self.positive not in self.names:
            raise ValueError(f"positive '{self.positive}' is not in names {self.names}")
        return self


def held_back_pool_name(train_dir: str | Path) -> str:
    """The name of the pool of a train folder's held-back images (the folders layout, import-folders)."""
    return f"{Path(train_dir).name}_unlabeled"


FOLDER_KEYS = ("train", "test", "test_size", "test_per_class", "val_size", "val_per_class", "labels_per_class", "seed")
CSV_KEYS = ("root", "labels", "split")


class DataConfig(Table):
    """`[data]`: the labeled images and their fixed split, in one of two layouts.

    `layout = "csv"` (the default): `root` is the folder image paths in the labels CSV and split
    are relative to; `labels` the labels CSV (image,label), `split` the fixed split CSV; at least
    one of them.

    `layout = "folders"`: a folder per class (the Keras `image_dataset_from_directory` layout), no
    CSV; what `pseudolabel data import-folders` does, made at every load. `train`: TRAIN/<class>/...
    images; the class names are the folder names (sorted, or `[data.classes] names` in that order:
    names only, no map). `test`: a folder per class that is the test split as it is; without it, a
    stratified, seeded part of `train` is (`test_size`, default 0.2, or `test_per_class` images of
    every class). `labels_per_class`: only N images per class stay labeled (train + val); the rest
    of `train` becomes the experiment's first pool, `<train folder name>_unlabeled`, its true labels
    written aside to OUTPUT/pool_truth.csv (never trained on; every round's pseudo-labels are
    measured by them). Validation: `val_per_class` images of every class, else
    a stratified `val_size` part (default 0.15) of the labeled training images. `seed` (default 0)
    seeds every choice of the split. The split is a function of the image files (names, classes,
    readability) and these keys: the same files and keys give the same split and split hash; an
    image added, removed, renamed or unreadable, or another key, gives another split, which runs
    made before refuse. Unreadable images are skipped and listed.
    """

    layout: Literal["csv", "folders"] = "csv"
    root: Optional[str] = None
    labels: Optional[str] = None
    split: Optional[str] = None
    classes: Union[None, NAMED_CLASS_MAPS, ClassesTable] = None
    train: Optional[str] = None
    test: Optional[str] = None
    test_size: Optional[Annotated[float, Field(gt=0.0, lt=1.0)]] = None
    test_per_class: Optional[AtLeastOne] = None
    val_size: Optional[Rate] = None
    val_per_class: Optional[AtLeastOne] = None
    labels_per_class: Optional[AtLeastOne] = None
    seed: Optional[Count] = None

    @field_validator("root", "labels", "split", "train", "test")
    @classmethod
    def _paths(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _one_layout(self) -> "DataConfig":
        given = lambda keys: [k for k in keys if getattr(self, k) is not None]  # noqa: E731
        if self.layout == "csv":
            if given(FOLDER_KEYS):
                raise ValueError(f"{', '.join(given(FOLDER_KEYS))}: only with layout = \"folders\"")
            if self.root is None:
                raise ValueError("root: required (the folder image paths in the CSVs are relative to)")
            if self.labels is None and self.split is None:
                raise ValueError("name the labels CSV (labels = ...) or the split (split = ...); nothing is assumed")
            return self
        if given(CSV_KEYS):
            raise ValueError(f"{', '.join(given(CSV_KEYS))}: not with layout = \"folders\" (train = the folder "
                             "per class; pseudolabel data import-folders writes CSVs)")
        if self.train is None:
            raise ValueError('train: required with layout = "folders" (the folder holding a folder per class)')
        for a, b in (("test", "test_size"), ("test", "test_per_class"), ("test_size", "test_per_class"),
                     ("val_size", "val_per_class")):
            if getattr(self, a) is not None and getattr(self, b) is not None:
                raise ValueError(f"{a} and {b}: give one of them")
        if not (self.classes is None or isinstance(self.classes, ClassesTable) and self.classes.map is None):
            raise ValueError('classes: with layout = "folders", only names = [...] (the class folders, in '
                             "index order) and positive; the raw labels are the folder names")
        if self.val_per_class is not None and self.labels_per_class is not None \
                and self.val_per_class >= self.labels_per_class:
            raise ValueError(f"val_per_class ({self.val_per_class}) must be below labels_per_class "
                             f"({self.labels_per_class}): some labels must train")
        return self

    def held_back_pool(self) -> Optional["PoolConfig"]:
        """The pool of the train folder's held-back images (layout "folders" with labels_per_class)."""
        if self.layout != "folders" or self.labels_per_class is None:
            return None
        return PoolConfig(name=held_back_pool_name(self.train), path=self.train)

    def as_task_config(self) -> dict[str, Any]:
        """The table as `data.load_task` reads it."""
        return self.model_dump(exclude_none=True)


class PoolConfig(Table):
    """`[[pools]]`: a folder of unlabeled images, scanned recursively (`glob` filters names), or,
    with `images`, only the images a CSV lists (column `image`; relative entries are relative to
    `path`): e.g. the labeled images a label-budget curve hides (`pseudolabel.curve`). The list is
    checked when the config is read: the file, its column, and that every listed image exists.

    `truth`: a CSV `image,label` of the true class NAMES of (some of) the pool's images (image
    paths absolute or relative to the CSV's folder), read only to measure the pseudo-labels
    (`pseudolabels.quality`). It is never part of a dump (`exclude`), so it reaches no run's
    config: adding or removing it changes no run."""

    path: str
    name: Optional[str] = None
    glob: Optional[str] = None
    images: Optional[str] = None
    truth: Optional[str] = Field(default=None, exclude=True)

    @field_validator("path", "images", "truth")
    @classmethod
    def _resolve_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _listed_images_exist(self) -> "PoolConfig":
        if self.images is not None:
            if self.glob is not None:
                raise ValueError("give glob (filter a folder) or images (a list), not both")
            from pseudolabel.data.pools import read_image_list

            read_image_list(self.images, self.path)   # a DataError (a ValueError) names the file and the problem
        return self

    @model_validator(mode="after")
    def _default_name(self) -> "PoolConfig":
        if self.name is None:
            object.__setattr__(self, "name", Path(self.path).name)
        return self


class ModelSelectionConfig(Table):
    """`[model_selection]`: the report keeps the teacher unless another model's val ROC AUC beats
    it by at least `margin` (a tiny val split ranks models noisily; `pseudolabel.model_selection`)."""

    margin: Annotated[float, Field(ge=0.0, le=1.0)] = DEFAULT_MARGIN


class TeacherRef(Table):
    recipe: str
    overrides: dict[str, Any] = {}   # merged over the recipe before it is validated

    @field_validator("recipe")
    @classmethod
    def _resolve_recipe(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)


class StudentsRef(Table):
    recipes: list[str] = []
    student_teaches: bool = True     # each student labels the pools for the next round
    # Who labels the pools for round 1: the teacher, or the self-trained feature classifier
    # (baseline_self_training: the probe self-trained on the pools, exported as a Keras model).
    # Or the labels-only student (baseline_labels_only_<backbone>: the first student recipe on the
    # labels alone), the strongest labels-only model when the teacher's recipe is the weaker one.
    first_teacher: Literal["teacher", "self_training", "labels_only"] = "teacher"
    overrides: dict[str, Any] = {}   # merged over every student recipe

    @field_validator("recipes")
    @classmethod
    def _paths(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return [resolve_path(v, info) for v in values]


class Experiment(Table):
    """An experiment file (`experiments/*.toml`). `load_experiment` also validates every recipe it
    names (`teacher_recipe`, `student_recipes`), so a wrong value anywhere fails before training."""

    name: str = "experiment"
    seed: Count = 0
    # Repeated seeds: one whole chain per seed in OUTPUT/seed-<s>/ (every recipe's train.seed = s)
    # and a summary over them (pseudolabel.seeds). Empty: one chain, the recipes' own seeds.
    seeds: list[Count] = []
    output: str
    path: Optional[str] = None       # the experiment file
    data: DataConfig
    pools: list[PoolConfig] = []
    teacher: Optional[TeacherRef] = None
    students: StudentsRef = StudentsRef()
    pseudo: PseudoConfig = PseudoConfig()
    baselines: Baselines = Baselines()
    model_selection: ModelSelectionConfig = ModelSelectionConfig()
    teacher_recipe: Optional[TeacherRecipe] = None
    student_recipes: list[StudentRecipe] = []

    @field_validator("output")
    @classmethod
    def _resolve_output(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _first_teacher_is_run(self) -> "Experiment":
        if self.students.first_teacher == "self_training" and not self.baselines.self_training:
            raise ValueError("students.first_teacher = 'self_training' needs [baselines] self_training = true")
        if self.students.first_teacher == "labels_only" and not self.baselines.labels_only_student:
            raise ValueError("students.first_teacher = 'labels_only' needs [baselines] labels_only_student = true")
        return self

    @model_validator(mode="after")
    def _held_back_pool_first(self) -> "Experiment":
        # The train folder's held-back images are a pool like any other (in config.json, in every
        # student's origin); added once, so a dumped and re-read experiment keeps one copy.
        pool = self.data.held_back_pool()
        if pool is not None and not any(p.name == pool.name and p.path == pool.path for p in self.pools):
            object.__setattr__(self, "pools", [pool, *self.pools])
        return self
