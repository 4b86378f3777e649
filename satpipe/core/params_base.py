"""What every params section shares: a strict frozen model, nested sections, class-name checks.

A *section* is one mapping of ``params.yaml`` (``tile``, ``train``), validated by one frozen
model with ``extra="forbid"``. A *nested section* is a mapping inside one that may be left
unset: ``ingest.labels``, ``ingest.stac`` (and its ``aoi``), ``train.onnx``.

``params.yaml`` spells out every key of a nested section with its default (null where there is
none), because DVC's ``dvc exp run -S`` refuses a key the file lacks: with ``train.onnx: null``
no ``-S train.onnx.path=...`` could ever switch the ONNX kind on. So a nested section whose keys
all hold their defaults means *unset* and validates to ``None``, exactly as ``null`` does; setting
any one key sets the section, with the defaults for the rest. A required key spelt out as null
counts as missing, so the error names it (``train.onnx.path is missing``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, model_validator

from satpipe.core.classes import MAX_CLASSES


class Section(BaseModel):
    """A ``params.yaml`` section: frozen, strict, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _unset_nested(cls, data: Any) -> Any:
        """Replace each nested section whose keys all hold their defaults by ``None``."""
        return unset_nested(cls, data)


class NestedSection(Section):
    """A section inside a section that may be unset (see the module docstring)."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_missing(cls, data: Any) -> Any:
        """Drop the required keys given as null, so that validation reports them missing."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if value is not None or key not in fields or not fields[key].is_required()
        }

    @classmethod
    def is_unset(cls, data: Mapping[str, Any]) -> bool:
        """Whether ``data`` leaves this section unset: every key known and at its default.

        A key's default is its field's default, or null for a required key; a nested section
        inside (``aoi``) is at its default when it is null or itself unset. An unknown key makes
        the section set, so that validation refuses it by name.

        Args:
            data: the section's mapping as ``params.yaml`` gives it.
        """
        nested = nested_fields(cls)
        for key, value in data.items():
            field = cls.model_fields.get(key)
            if field is None:
                return False
            if value is None:
                continue
            if key in nested and isinstance(value, dict) and nested[key].is_unset(value):
                continue
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            if type(value) is not type(default) or value != default:
                return False
        return True


def unset_nested(model: type[BaseModel], data: Any) -> Any:
    """``data`` with each nested section of ``model`` whose keys all hold their defaults as None.

    What validation does first, also usable on params read back from ``dvc.lock`` (which records
    them as ``params.yaml`` spells them out), so that both say "unset" the same way.

    Args:
        model: a section model (``TrainParams``).
        data: the section's mapping; anything else is returned unchanged.
    """
    if not isinstance(data, dict):
        return data
    unset = [
        name
        for name, nested in nested_fields(model).items()
        if isinstance(data.get(name), dict) and nested.is_unset(data[name])
    ]
    return {**data, **dict.fromkeys(unset)} if unset else data


@functools.cache
def nested_fields(model: type[BaseModel]) -> dict[str, type[NestedSection]]:
    """The fields of ``model`` that hold an optional nested section (``onnx: OnnxParams | None``).

    Args:
        model: a section model.

    Returns:
        Field name to nested section model.
    """
    found: dict[str, type[NestedSection]] = {}
    for name, field in model.model_fields.items():
        args = get_args(field.annotation)
        if type(None) not in args:
            continue
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, NestedSection):
                found[name] = arg
    return found


def check_class_names(names: list[str]) -> list[str]:
    """Class names: 1 to MAX_CLASSES distinct, non-empty names without surrounding spaces.

    Args:
        names: the class names, in order.

    Returns:
        ``names``, unchanged.

    Raises:
        ValueError: too few or too many names, an empty or padded name, or a repeated one.
    """
    if not 1 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"{len(names)} classes; expected 1 to {MAX_CLASSES}")
    for name in names:
        if not name or name != name.strip():
            raise ValueError(f"class name {name!r} is empty or has surrounding spaces")
    if len(set(names)) != len(names):
        raise ValueError(f"class names {names} repeat a name; expected distinct names")
    return names
