"""Reading recipes and experiments: TOML -> overrides merged -> validated schema (config.schema).

A recipe (`teachers/*.toml`, `students/*.toml`) says how to build and train one model; an
experiment (`experiments/*.toml`) names the data, the pools, the teacher recipe, the student
recipes and the pseudo-labeling settings. There is one way to override a value: a nested table
merged over the file's own before validation (`[teacher.overrides]` / `[students.overrides]` in an
experiment, `--set KEY=VALUE` on the command line, `overrides=` in Python), so an override is
checked exactly like the file. One-line forms (`algorithm = "fixmatch"`) are expanded into their
tables on both sides first (`Recipe.expand_shorthands`), so either form overrides either form.

Paths: every relative path is relative to the folder of the file that names it (a recipe's
`weights`; an experiment's `data.root`, `data.labels`, `data.split`, pool paths, recipes and
`output`); absolute paths and `~` are accepted. Nothing defaults to a file the user did not name.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pseudolabel.config.schema import LOADER_FIELDS, RECIPES, Experiment, Recipe


class ConfigError(ValueError):
    """A config file (or override) that cannot be used: one line naming the file and the key."""


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def merge_overrides(values: dict, overrides: dict | None) -> dict:
    """`overrides` deep-merged over `values` (tables merge, anything else replaces)."""
    out = copy.deepcopy(values)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(schema: type[BaseModel], values: dict, *, source: str, base: Path | None = None):
    """`schema` validated from `values`; errors become one ConfigError line naming `source`."""
    try:
        return schema.model_validate(values, context={"base": base})
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, schema, source)) from None


def load_recipe(path: str | Path, kind: str = "teacher", overrides: dict | None = None) -> Recipe:
    """A teacher or student recipe (`config.schema.TeacherRecipe` / `StudentRecipe`)."""
    if kind not in RECIPES:
        raise ConfigError(f"recipe kind must be one of {', '.join(RECIPES)}, got {kind!r}")
    path = Path(path)
    raw = read_toml(path)
    _refuse_reserved(raw, ("kind", "path"), str(path))
    source = f"{path} (with overrides)" if overrides else str(path)
    schema = RECIPES[kind]
    merged = merge_overrides(schema.expand_shorthands(raw), schema.expand_shorthands(overrides))
    values = {**merged, "kind": kind, "path": str(path.resolve())}
    return validate(schema, values, source=source, base=path.resolve().parent)


def load_experiment(path: str | Path, overrides: dict | None = None) -> Experiment:
    """An experiment, with every recipe it names loaded and validated (`teacher_recipe`,
    `student_recipes`): a wrong value in any of them fails here, before any work."""
    path = Path(path)
    raw = read_toml(path)
    _refuse_reserved(raw, ("path", "teacher_recipe", "student_recipes"), str(path))
    values = {**merge_overrides(raw, overrides), "path": str(path.resolve())}
    values.setdefault("output", f"runs/{values.get('name', 'experiment')}")
    experiment = validate(Experiment, values, source=str(path), base=path.resolve().parent)
    teacher = None
    if experiment.teacher is not None:
        teacher = load_recipe(experiment.teacher.recipe, "teacher", experiment.teacher.overrides or None)
    students = [load_recipe(r, "student", experiment.students.overrides or None)
                for r in experiment.students.recipes]
    return experiment.model_copy(update={"teacher_recipe": teacher, "student_recipes": students})


def _refuse_reserved(raw: dict, keys: tuple[str, ...], source: str) -> None:
    for key in keys:
        if key in raw:
            raise ConfigError(f"{source}: '{key}' is set by pseudolabel, not in the file; remove it")


# --------------------------------------------------------------------------- error lines


def describe_validation_error(error: ValidationError, schema: type[BaseModel], source: str) -> str:
    """One line: the file, the first wrong key, what is wrong and what is allowed."""
    problems: dict[str, list[dict]] = {}
    # An unknown key first: a typo ("[dat]") also makes the key it meant missing.
    for item in sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden"):
        key, known = _key_and_known_fields(schema, item["loc"], unknown_key=item["type"] == "extra_forbidden")
        problems.setdefault(key, []).append({**item, "known": known})
    key, items = next(iter(problems.items()))
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"{source}: {_problem(key, items)}{more}"


def _problem(key: str, items: list[dict]) -> str:
    """What is wrong with `key`; several items are the alternatives of a union ("'all' or an integer")."""
    first = items[0]
    if first["type"] == "extra_forbidden":
        hint = f" (known here: {', '.join(first['known'])})" if first["known"] else ""
        return f"unknown key '{key}'{hint}"
    if first["type"] == "missing":
        return f"{key}: required, missing"
    wanted = " or ".join(dict.fromkeys(
        i["msg"].removeprefix("Value error, ").removeprefix("Input should be ") for i in items))
    if first["msg"].startswith("Input should be "):
        wanted = f"should be {wanted}"
    value = first.get("input")
    got = "" if first["type"].startswith("value_error") or isinstance(value, dict) else f", got {value!r}"
    if isinstance(value, str) and all(i["type"] in ("float_type", "int_type") for i in items):
        got += " (a string: write numbers without quotes)"
    return f"{key}: {wanted}{got}" if key else f"{wanted}{got}"


def _key_and_known_fields(schema: type[BaseModel], loc: tuple, unknown_key: bool) -> tuple[str, list[str] | None]:
    """The dotted key of `loc` (list positions as [i]) and the fields allowed where it ends.

    A step that is not a field of the current table is a union member's tag (a table's class
    name: go into it; "int", "literal[...]": the key ends there) or, as the last step of an
    extra_forbidden error, the unknown key itself."""
    parts, models = [], [schema]
    for i, step in enumerate(loc):
        if isinstance(step, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{step}]"]
            continue
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if step in fields:
            parts.append(step)
            models = _models_in(fields[step].annotation)
        elif any(_names_model(step, m) for m in models):
            models = [m for m in models if _names_model(step, m)]
        elif unknown_key and i == len(loc) - 1:
            return ".".join([*parts, step]), sorted(set(fields) - (set() if parts else LOADER_FIELDS))
        else:
            break
    return ".".join(parts), None


def _names_model(tag: str, model: type[BaseModel]) -> bool:
    # a union member's tag: "ClassesTable", or "function-after[_check(), ClassesTable]" with a validator
    return tag == model.__name__ or tag.endswith(f" {model.__name__}]")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The tables inside an annotation (`X`, `Optional[X]`, `list[X]`, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]
