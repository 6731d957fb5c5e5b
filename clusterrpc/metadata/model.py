"""The configuration model of a plugin: :class:`Field` and :class:`PluginMetadata`.

The framework paper's field list ("Self-Configuration"), typed: every field has a
``fieldname``, a ``label``, a ``basictype`` (``string``, ``integer``, ``double``, ``boolean``,
``array``, ``struct``) and optionally a ``specialtype`` (:mod:`clusterrpc.metadata.specialtypes`;
a name no tool knows falls back to basictype, length and regex), ``length`` (a string's
longest, an array's most items), ``regex`` (full-matched; the subset of
:mod:`clusterrpc.metadata.regex`), ``minimum``/``maximum`` (numbers), ``short_text`` and
``long_text``, ``items`` (an array's element field) or ``fields`` (a struct's), ``required``,
``default`` and ``secret``. A secret has no default: it is write-only everywhere.

Everything else is generated from this model: the plain field list (:func:`to_fields`), a
struct for XML-RPC (:meth:`PluginMetadata.to_value`), JSON Schema
(:mod:`clusterrpc.metadata.jsonschema`) and OCF XML (:mod:`clusterrpc.metadata.ocf`). Every
model is checked when it is built; :class:`~clusterrpc.errors.ConfigurationError` says what is
wrong with it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from clusterrpc.errors import ConfigurationError

__all__ = ["BASICTYPES", "Field", "PluginMetadata", "from_fields", "to_fields"]

BASICTYPES: Final = ("string", "integer", "double", "boolean", "array", "struct")
_FIELDNAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PLUGIN_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_INT64 = range(-(2**63), 2**63)
# The order of the field list's keys (the paper's, then the typed model's additions).
_FIELD_KEYS: Final = ("fieldname", "label", "basictype", "specialtype", "length", "regex",
                      "minimum", "maximum", "short_text", "long_text", "required", "default",
                      "secret", "items", "fields")


def _text(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value) or "\x00" in value:
        raise ConfigurationError(f"{what} must be a{'' if empty else ' non-empty'} string "
                                 f"without NUL, not {value!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One configuration field (module docstring). Raises
    :class:`~clusterrpc.errors.ConfigurationError` for an invalid one: a bad name or type,
    limits that do not fit the type, a regex outside the shared subset, a struct without
    fields (or with two of one name), an array without items, a default that does not
    validate, or a secret with a default."""

    fieldname: str
    label: str = ""
    basictype: str = "string"
    specialtype: str | None = None
    length: int | None = None
    regex: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    short_text: str = ""
    long_text: str = ""
    required: bool = False
    default: Any = None
    secret: bool = False
    items: Field | None = None
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        where = f"field {self.fieldname!r}"
        if not isinstance(self.fieldname, str) or not _FIELDNAME.fullmatch(self.fieldname):
            raise ConfigurationError(f"field name {self.fieldname!r} must be 1-64 characters "
                                     "of a-z 0-9 _, starting with a letter")
        for name in ("label", "short_text", "long_text"):
            _text(getattr(self, name), f"{where}: {name}")
        if self.basictype not in BASICTYPES:
            raise ConfigurationError(f"{where}: basictype {self.basictype!r} is not one of "
                                     f"{', '.join(BASICTYPES)}")
        for name in ("required", "secret"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{where}: {name} must be true or false")
        object.__setattr__(self, "fields", tuple(self.fields))
        self._check_shape(where)
        if self.specialtype is not None:
            from clusterrpc.metadata.specialtypes import check_specialtype  # noqa: PLC0415

            check_specialtype(self.specialtype, self.basictype, where)
        if self.secret and self.default is not None:
            raise ConfigurationError(f"{where}: a secret has no default (it would be shown)")
        if self.secret and self.basictype != "string":
            raise ConfigurationError(f"{where}: a secret is a string")
        if self.default is not None:
            from clusterrpc.metadata.validate import field_problems  # noqa: PLC0415

            problems = field_problems(self, self.default, f"{where}: default")
            if problems:
                raise ConfigurationError(f"{where}: the default {self.default!r} is invalid: "
                                         f"{problems[0].message}")

    def _check_shape(self, where: str) -> None:
        kind = self.basictype
        if self.length is not None and (type(self.length) is not int or self.length < 0
                                        or kind not in ("string", "array")):
            raise ConfigurationError(f"{where}: length is a count >= 0, for a string or an "
                                     "array only")
        if self.regex is not None:
            if kind != "string":
                raise ConfigurationError(f"{where}: regex applies to strings only")
            from clusterrpc.metadata.regex import check_regex  # noqa: PLC0415

            check_regex(_text(self.regex, f"{where}: regex"), where=where)
        for name in ("minimum", "maximum"):
            bound = getattr(self, name)
            if bound is None:
                continue
            if kind not in ("integer", "double"):
                raise ConfigurationError(f"{where}: {name} applies to numbers only")
            good = (type(bound) is int and bound in _INT64) if kind == "integer" else (
                type(bound) in (int, float) and math.isfinite(bound))
            if not good:
                raise ConfigurationError(f"{where}: {name} must be a finite {kind}")
        if (self.minimum is not None and self.maximum is not None
                and self.minimum > self.maximum):
            raise ConfigurationError(f"{where}: minimum {self.minimum} > maximum {self.maximum}")
        if kind == "array":
            if not isinstance(self.items, Field):
                raise ConfigurationError(f"{where}: an array needs items (a Field)")
        elif self.items is not None:
            raise ConfigurationError(f"{where}: items applies to arrays only")
        if kind == "struct":
            _check_field_set(self.fields, where)
        elif self.fields:
            raise ConfigurationError(f"{where}: fields applies to structs only")


def _check_field_set(fields: Sequence[Field], where: str) -> None:
    if not fields and where.startswith("field"):
        raise ConfigurationError(f"{where}: a struct needs fields")
    seen: set[str] = set()
    for field in fields:
        if not isinstance(field, Field):
            raise ConfigurationError(f"{where}: {field!r} is not a Field")
        if field.fieldname in seen:
            raise ConfigurationError(f"{where}: field {field.fieldname!r} appears twice")
        seen.add(field.fieldname)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PluginMetadata:
    """The configuration model of one plugin: its ``name``, plugin ``type`` (``codec``,
    ``auth``, ``service``, …), ``version``, ``short_text``/``long_text`` and ``fields``
    (module docstring). Raises :class:`~clusterrpc.errors.ConfigurationError` for an invalid
    one (see :class:`Field`)."""

    name: str
    type: str
    version: str = "0"
    short_text: str = ""
    long_text: str = ""
    fields: tuple[Field, ...] = ()

    def __post_init__(self) -> None:
        _text(self.name, "plugin name", empty=False)
        if not isinstance(self.type, str) or not _PLUGIN_TYPE.fullmatch(self.type):
            raise ConfigurationError(f"plugin type {self.type!r} must be 1-32 characters of "
                                     "a-z 0-9 _, starting with a letter")
        for name in ("version", "short_text", "long_text"):
            _text(getattr(self, name), f"plugin {self.name!r}: {name}")
        object.__setattr__(self, "fields", tuple(self.fields))
        _check_field_set(self.fields, f"plugin {self.name!r}")

    def field(self, path: str) -> Field:
        """The field at a dotted ``path`` (``servers.port`` for a struct's field; an
        array's items are ``servers[]``). Raises :class:`KeyError` for none."""
        fields, found = self.fields, None
        for part in path.split("."):
            name, is_items = (part[:-2], True) if part.endswith("[]") else (part, False)
            found = next((each for each in fields if each.fieldname == name), None)
            if found is None:
                raise KeyError(path)
            if is_items:
                if found.items is None:
                    raise KeyError(path)
                found = found.items
            fields = found.fields
        assert found is not None
        return found

    def to_value(self) -> dict[str, Any]:
        """The model as an XML-RPC struct (strings, ints, floats, bools, lists, structs; an
        absent attribute is left out, never nil): what ``system.describePlugin`` answers,
        from which a remote GUI builds a form (``spec/metadata.md``, "As a value")."""
        return {"name": self.name, "type": self.type, "version": self.version,
                "short_text": self.short_text, "long_text": self.long_text,
                "fields": to_fields(self)}

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> PluginMetadata:
        """The inverse of :meth:`to_value`; raises
        :class:`~clusterrpc.errors.ConfigurationError` for a value that is not one."""
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"plugin metadata is a struct, not {value!r}")
        unknown = sorted(set(value) - {"name", "type", "version", "short_text", "long_text",
                                       "fields"})
        if unknown:
            raise ConfigurationError(f"plugin metadata: unknown key {unknown[0]!r}")
        try:
            return cls(name=value["name"], type=value["type"],
                       version=value.get("version", "0"),
                       short_text=value.get("short_text", ""),
                       long_text=value.get("long_text", ""),
                       fields=from_fields(value.get("fields", [])))
        except KeyError as error:
            raise ConfigurationError(f"plugin metadata needs {error.args[0]!r}") from None


def _field_to_dict(field: Field) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in _FIELD_KEYS:
        value = getattr(field, key)
        if key == "items":
            if value is not None:
                row[key] = _field_to_dict(value)
        elif key == "fields":
            if value:
                row[key] = [_field_to_dict(each) for each in value]
        elif key in ("required", "secret", "label", "short_text", "long_text") or value is not None:
            row[key] = value
    return row


def to_fields(meta: PluginMetadata | Sequence[Field]) -> list[dict[str, Any]]:
    """The paper's field list: one dict per field with the keys fieldname, label, basictype,
    specialtype, length, regex, minimum, maximum, short_text, long_text, required, default,
    secret, items, fields (absent values left out). :func:`from_fields` reads it back."""
    fields = meta.fields if isinstance(meta, PluginMetadata) else meta
    return [_field_to_dict(field) for field in fields]


def _field_from_dict(row: object, where: str) -> Field:
    if not isinstance(row, Mapping):
        raise ConfigurationError(f"{where}: a field is a struct, not {row!r}")
    unknown = sorted(set(row) - set(_FIELD_KEYS))
    if unknown:
        raise ConfigurationError(f"{where}: unknown field key {unknown[0]!r}")
    if "fieldname" not in row:
        raise ConfigurationError(f"{where}: a field needs a fieldname")
    options = dict(row)
    if "items" in options:
        options["items"] = _field_from_dict(options["items"], f"{where}.items")
    if "fields" in options:
        if not isinstance(options["fields"], list | tuple):
            raise ConfigurationError(f"{where}: fields is a list")
        options["fields"] = tuple(_field_from_dict(each, f"{where}.fields[{index}]")
                                  for index, each in enumerate(options["fields"]))
    return Field(**options)


def from_fields(rows: Sequence[object]) -> tuple[Field, ...]:
    """The fields of a field list (:func:`to_fields`); raises
    :class:`~clusterrpc.errors.ConfigurationError` for an invalid one."""
    if not isinstance(rows, list | tuple):
        raise ConfigurationError(f"a field list is a list, not {rows!r}")
    return tuple(_field_from_dict(row, f"fields[{index}]") for index, row in enumerate(rows))
