"""Checking a configuration against a plugin's metadata: every problem, with its path.

:func:`validate` returns a :class:`ConfigProblem` for **every** problem it finds — unknown
keys, missing required fields, wrong types (a boolean is not an integer; an integer is a
double), lengths, regexes (full match), special types, minimum and maximum, inside arrays and
structs at any depth — so an operator fixes a file in one round. A problem names the field's
path (``plugins.kvstore.servers[2].port``), what was expected, and the offending value as
``repr`` — or ``********`` for a secret field, whose value is never echoed.

:func:`check` is :func:`validate` that raises :class:`~clusterrpc.errors.ConfigProblemsError`
and otherwise returns the configuration with defaults filled in and special types normalised
(a ``duration`` of ``"250ms"`` becomes ``0.25``), which is what a plugin is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

from clusterrpc.errors import ConfigProblemsError
from clusterrpc.metadata.model import Field, PluginMetadata
from clusterrpc.metadata.regex import fullmatch
from clusterrpc.metadata.specialtypes import SPECIALTYPES

__all__ = ["MASK", "ConfigProblem", "apply_defaults", "check", "expected_of", "field_problems",
           "validate"]

MASK: Final = "********"
_INT64 = range(-(2**63), 2**63)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConfigProblem:
    """One problem of a configuration: the field's ``path``, what was ``expected``, the
    offending ``value`` (``repr``, or ``********`` for a secret) and a ``message``."""

    path: str
    expected: str
    value: str
    message: str


def expected_of(field: Field) -> str:
    """What a valid value of ``field`` is, in a few words (``integer 1..65535``)."""
    special = SPECIALTYPES.get(field.specialtype or "")
    text = special.description if special is not None else field.basictype
    if field.specialtype and special is None:
        text = f"{field.basictype} ({field.specialtype})"
    if field.minimum is not None or field.maximum is not None:
        low = "" if field.minimum is None else field.minimum
        high = "" if field.maximum is None else field.maximum
        text += f" {low}..{high}"
    if field.length is not None:
        text += (f" of at most {field.length} characters" if field.basictype == "string"
                 else f" of at most {field.length} items")
    if field.regex is not None:
        text += f" matching {field.regex}"
    return text


def _shown(field: Field, value: object) -> str:
    return MASK if field.secret else repr(value)


def _problem(field: Field, path: str, value: object, message: str) -> ConfigProblem:
    return ConfigProblem(path=path, expected=expected_of(field), value=_shown(field, value),
                         message=message)


def _basic(field: Field, value: object, path: str) -> tuple[list[ConfigProblem], object]:
    """The problems of ``value`` as ``field``'s basictype, and the value normalised."""
    kind = field.basictype
    wrong = [_problem(field, path, value, f"expected {'an' if kind[0] in 'ai' else 'a'} "
                                          f"{kind}, not {_kind_of(value)}")]
    if kind == "string":
        if not isinstance(value, str):
            return wrong, value
        if field.length is not None and len(value) > field.length:
            return [_problem(field, path, value, f"longer than {field.length} characters")], value
        if field.regex is not None and not fullmatch(field.regex, value):
            return [_problem(field, path, value, "does not match the pattern")], value
        return [], value
    if kind == "boolean":
        return ([] if isinstance(value, bool) else wrong), value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
            return wrong, value
        return _bounds(field, value, path), value
    if kind == "double":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            return wrong, value
        return _bounds(field, value, path), float(value)
    if kind == "array":
        if not isinstance(value, list | tuple):
            return wrong, value
        problems: list[ConfigProblem] = []
        if field.length is not None and len(value) > field.length:
            problems.append(_problem(field, path, value, f"more than {field.length} items"))
        assert field.items is not None
        normalised = []
        for index, item in enumerate(value):
            item_problems, item_value = _value(field.items, item, f"{path}[{index}]")
            problems += item_problems
            normalised.append(item_value)
        return problems, normalised
    assert kind == "struct"
    if not isinstance(value, Mapping):
        return wrong, value
    problems, struct = _section(field.fields, value, path)
    return problems, struct


def _bounds(field: Field, value: float, path: str) -> list[ConfigProblem]:
    if field.minimum is not None and value < field.minimum:
        return [_problem(field, path, value, f"below the minimum {field.minimum}")]
    if field.maximum is not None and value > field.maximum:
        return [_problem(field, path, value, f"above the maximum {field.maximum}")]
    return []


def _kind_of(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a double", str: "a string",
             list: "an array", tuple: "an array", dict: "a struct"}
    return names.get(type(value), type(value).__name__)


def _value(field: Field, value: object, path: str) -> tuple[list[ConfigProblem], object]:
    special = SPECIALTYPES.get(field.specialtype or "")
    if special is not None:
        try:
            value = special.parse(value)
        except ValueError as error:
            return [_problem(field, path, value, str(error))], value
    return _basic(field, value, path)


def _section(fields: tuple[Field, ...], section: Mapping[Any, Any], path: str,
             ) -> tuple[list[ConfigProblem], dict[str, Any]]:
    problems: list[ConfigProblem] = []
    known = {field.fieldname: field for field in fields}
    result: dict[str, Any] = {}
    prefix = f"{path}." if path else ""
    for key in section:
        if key not in known:
            problems.append(ConfigProblem(
                path=f"{prefix}{key}", expected=f"one of: {', '.join(known) or 'no field'}",
                value=repr(section[key]), message=f"unknown field {key!r}"))
    for name, field in known.items():
        where = f"{prefix}{name}"
        if name not in section or section[name] is None:
            if field.default is not None:
                result[name] = _value(field, field.default, where)[1]
            elif field.required:
                problems.append(ConfigProblem(path=where, expected=expected_of(field),
                                              value="(missing)", message="required"))
            continue
        field_problems_, value = _value(field, section[name], where)
        problems += field_problems_
        result[name] = value
    return problems, result


def field_problems(field: Field, value: object, path: str) -> list[ConfigProblem]:
    """Every problem of ``value`` as a value of ``field`` (at ``path``)."""
    return _value(field, value, path)[0]


def validate(meta: PluginMetadata, section: Mapping[str, Any], *,
             path: str = "") -> list[ConfigProblem]:
    """Every problem of ``section`` (a plugin's configuration) against ``meta``; ``path``
    prefixes the field paths (``plugins.NAME``). Empty when it is valid."""
    if not isinstance(section, Mapping):
        return [ConfigProblem(path=path, expected="a table", value=repr(section),
                              message="a plugin's configuration is a table")]
    return _section(meta.fields, section, path)[0]


def apply_defaults(meta: PluginMetadata, section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with the defaults of absent fields filled in and special types normalised.
    Only meaningful for a valid section (:func:`validate`)."""
    return _section(meta.fields, section, "")[1]


def check(meta: PluginMetadata, section: Mapping[str, Any], *,
          where: str = "") -> dict[str, Any]:
    """:func:`apply_defaults` of a valid ``section``; raises
    :class:`~clusterrpc.errors.ConfigProblemsError` with every problem otherwise (``where``
    prefixes the field paths)."""
    problems = validate(meta, section, path=where)
    if problems:
        raise ConfigProblemsError(problems)
    return _section(meta.fields, section, where)[1]
