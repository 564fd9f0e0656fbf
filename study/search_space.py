"""A study's search space checked against the trial settings it names, before any trial runs:
every key must name a setting, and both ends of every range and every categorical choice
must be a value that setting accepts. Errors name the key, the bad value and what the
setting allows (from its pydantic field constraints).
"""
from __future__ import annotations

import difflib
import json
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .config_io import apply_overrides

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`ArchConfig`, `TeacherConfig | None`), if any."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def setting_field(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field a dotted search-space key (`student.rank`) names in `model`; None if none."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i == len(parts) - 1:
            return field
        model = _submodel(field.annotation)
        if model is None:
            return None
    return None


def setting_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted setting name of `model` (`alpha`, `student.rank`, …)."""
    names = []
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        names += setting_names(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"]
    return names


def allowed_values(field: FieldInfo, key: str) -> str | None:
    """What the field accepts, from its constraints: `alpha >= 0 and <= 1`, `one of fp32, bf16`."""
    bounds = [f"{sym} {getattr(m, attr):g}" for m in field.metadata for attr, sym in _BOUNDS
              if isinstance(getattr(m, attr, None), (int, float))]
    if bounds:
        return f"{key} {' and '.join(bounds)}"
    choices = [a for t in (field.annotation, *typing.get_args(field.annotation))
               if typing.get_origin(t) is typing.Literal for a in typing.get_args(t)]
    return f"{key} one of {', '.join(map(str, choices))}" if choices else None


def _whole_number_field(field: FieldInfo) -> bool:
    types = typing.get_args(field.annotation) or (field.annotation,)
    return int in types and float not in types


def check_search_space(space: dict[str, Any], trial: BaseModel) -> None:
    """Raise ValueError if a key of `space` (name → `ParamSpec`) names no setting of `trial`,
    or if an end of its range (`low`, the highest `high` its step reaches) or one of its
    choices is a value that setting refuses."""
    model = type(trial)
    base = trial.model_dump(mode="json")
    for key, spec in space.items():
        field = setting_field(model, key)
        if field is None:
            near = difflib.get_close_matches(key, setting_names(model), n=3)
            raise ValueError(f"search_space key {key!r} is not a valid trial setting"
                             + (f"; did you mean {', '.join(near)}?" if near else ""))
        if spec.type == "float" and _whole_number_field(field):
            raise ValueError(f"search_space key {key!r}: {key} takes whole numbers; use type: int")
        for what, value in spec.extremes():
            data = apply_overrides(json.loads(json.dumps(base)), [f"{key}={json.dumps(value)}"])
            try:
                model.model_validate(data)
            except ValidationError as e:
                reason = allowed_values(field, key) or e.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"search_space key {key!r}: {what} {value!r} is not allowed ({reason}); "
                                 "keep both ends of the range and every choice inside what the setting allows") from None


def split_dotted_key_hint(space: Any) -> str | None:
    """A hint when `--set search_space.student.rank={…}` split a dotted key into sections
    (`{"student": {"rank": {…}}}`); None when the space looks as written in YAML."""
    if not isinstance(space, dict):
        return None
    for key, spec in space.items():
        if isinstance(spec, dict) and "type" not in spec and spec and all(isinstance(v, dict) for v in spec.values()):
            sub = next(iter(spec))
            return (f"search_space key {key!r} holds {{{sub}: …}}, not a parameter: with --set, write a key that "
                    f"holds dots in quotes and brackets, e.g. --set 'search_space[\"{key}.{sub}\"]={{type: int, low: 1, "
                    "high: 4}'")
    return None
