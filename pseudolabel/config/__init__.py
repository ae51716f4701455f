"""Recipes and experiments: TOML files validated against typed schemas when they are read.

    from pseudolabel.config import load_experiment, load_recipe
    experiment = load_experiment("experiments/house_rooms_bedroom_pool.toml")
    experiment.teacher_recipe.train.phase1_epochs, experiment.pseudo.threshold

`schema` holds the tables (pydantic models: types, ranges, allowed values); `loading` reads the
files, merges overrides and turns validation errors into one line naming the file and the key.
"""

from pseudolabel.config.loading import (
    ConfigError,
    describe_validation_error,
    load_experiment,
    load_recipe,
    merge_overrides,
    read_toml,
    validate,
)
from pseudolabel.config.schema import (
    AlgorithmConfig,
    Baselines,
    ClassesTable,
    DataConfig,
    Experiment,
    ModelConfig,
    Noise,
    PoolConfig,
    ProbeConfig,
    PseudoConfig,
    LabelSpreadingConfig,
    SelfTrainingConfig,
    Recipe,
    StudentRecipe,
    StudentTrain,
    TeacherRecipe,
    TeacherTrain,
)

__all__ = [
    "AlgorithmConfig", "Baselines", "LabelSpreadingConfig", "SelfTrainingConfig", "ClassesTable", "ConfigError", "DataConfig", "Experiment", "ModelConfig", "Noise", "PoolConfig",
    "ProbeConfig", "PseudoConfig", "Recipe", "StudentRecipe", "StudentTrain", "TeacherRecipe", "TeacherTrain",
    "describe_validation_error", "load_experiment", "load_recipe", "merge_overrides", "read_toml", "validate",
]
