"""A plugin's metadata as JSON Schema 2020-12, and back (``spec/metadata.md``).

The schema describes the plugin's configuration table: an ``object`` with one property per
field, ``required``, ``additionalProperties: false``. Each property says what JSON Schema can
say — ``type``, ``title`` (the label), ``description`` (short text), ``maxLength``/``maxItems``
(length), ``pattern`` (the regex, anchored ``^(?:…)$`` because JSON Schema searches),
``minimum``/``maximum``, ``format`` (``ipv4``, ``ipv6``), ``default``, ``items``,
``properties`` — and a secret is ``writeOnly: true`` with no default. What JSON Schema lacks
goes in the annotation keyword ``x-clusterrpc``, an object that validators ignore and that
:func:`from_json_schema` reads back, so the round trip is exact:

* on the schema: ``{"name", "type", "version", "long_text"}`` (the plugin);
* on a property: ``{"fieldname", "basictype", "specialtype", "secret", "long_text",
  "label", "regex", "length", "bounds"}`` — only the keys that are set (``bounds``: a
  duration's own minimum and maximum, see below).

A ``duration`` accepts a number of seconds or a string such as ``250ms``, as the validator
does, so its property is ``anyOf`` those two.
"""

from __future__ import annotations

from typing import Any, Final

from clusterrpc.errors import ConfigurationError
from clusterrpc.metadata.model import Field, PluginMetadata
from clusterrpc.metadata.specialtypes import SPECIALTYPES

__all__ = ["DIALECT", "VOCABULARY", "from_json_schema", "to_json_schema"]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
VOCABULARY: Final = "x-clusterrpc"
_TYPES: Final = {"string": "string", "integer": "integer", "double": "number",
                 "boolean": "boolean", "array": "array", "struct": "object"}
_DURATION_TEXT: Final = "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$"


def _property(field: Field) -> dict[str, Any]:
    extra: dict[str, Any] = {"fieldname": field.fieldname, "basictype": field.basictype}
    for key in ("specialtype", "regex", "length"):
        if getattr(field, key) is not None:
            extra[key] = getattr(field, key)
    for key in ("label", "long_text"):
        if getattr(field, key):
            extra[key] = getattr(field, key)
    if field.secret:
        extra["secret"] = True
    schema: dict[str, Any] = {"type": _TYPES[field.basictype]}
    if field.label:
        schema["title"] = field.label
    if field.short_text:
        schema["description"] = field.short_text
    if field.length is not None:
        schema["maxLength" if field.basictype == "string" else "maxItems"] = field.length
    if field.regex is not None:
        schema["pattern"] = f"^(?:{field.regex})$"
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    special = SPECIALTYPES.get(field.specialtype or "")
    if special is not None:
        schema.update(special.schema)
    if field.items is not None:
        schema["items"] = _property(field.items)
    if field.basictype == "struct":
        schema.update(_object(field.fields))
    if field.specialtype == "duration":
        # The field's own bounds stay in the annotation; the number branch adds ">= 0".
        bounds = {key: schema.pop(key) for key in ("minimum", "maximum") if key in schema}
        if bounds:
            extra["bounds"] = dict(bounds)
        schema.pop("type")
        schema["anyOf"] = [{"type": "number", **bounds,
                            "minimum": max(bounds.get("minimum", 0), 0)},
                           {"type": "string", "pattern": _DURATION_TEXT}]
    if field.secret:
        schema["writeOnly"] = True
    elif field.default is not None:
        schema["default"] = field.default
    schema[VOCABULARY] = extra
    return schema


def _object(fields: tuple[Field, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {field.fieldname: _property(field) for field in fields},
        "additionalProperties": False,
    }
    required = [field.fieldname for field in fields if field.required]
    if required:
        schema["required"] = required
    return schema


def to_json_schema(meta: PluginMetadata) -> dict[str, Any]:
    """The JSON Schema 2020-12 of ``meta``'s configuration (module docstring)."""
    schema: dict[str, Any] = {"$schema": DIALECT, "title": meta.name}
    if meta.short_text:
        schema["description"] = meta.short_text
    schema.update(_object(meta.fields))
    schema[VOCABULARY] = {"name": meta.name, "type": meta.type, "version": meta.version,
                          **({"long_text": meta.long_text} if meta.long_text else {})}
    return schema


def _field(name: str, schema: Any) -> Field:
    if not isinstance(schema, dict) or not isinstance(schema.get(VOCABULARY), dict):
        raise ConfigurationError(f"property {name!r} has no {VOCABULARY} annotation: not a "
                                 "schema this module wrote")
    extra = schema[VOCABULARY]
    options: dict[str, Any] = {
        "fieldname": extra.get("fieldname", name), "basictype": extra.get("basictype"),
        "label": extra.get("label", schema.get("title", "")),
        "short_text": schema.get("description", ""), "long_text": extra.get("long_text", ""),
        "secret": bool(extra.get("secret", False)),
    }
    for key in ("specialtype", "regex", "length"):
        if key in extra:
            options[key] = extra[key]
    bounds = extra.get("bounds", {}) if "anyOf" in schema else schema
    for key in ("minimum", "maximum"):
        if key in bounds:
            options[key] = bounds[key]
    if "default" in schema:
        options["default"] = schema["default"]
    if "items" in schema:
        options["items"] = _field(f"{name}[]", schema["items"])
    if options["basictype"] == "struct":
        options["fields"] = _fields(schema)
    return Field(**options)


def _fields(schema: dict[str, Any]) -> tuple[Field, ...]:
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        field = _field(name, prop)
        if name in required:
            field = Field(**{**_as_options(field), "required": True})
        fields.append(field)
    return tuple(fields)


def _as_options(field: Field) -> dict[str, Any]:
    return {slot: getattr(field, slot) for slot in Field.__slots__}


def from_json_schema(schema: dict[str, Any]) -> PluginMetadata:
    """The metadata a schema from :func:`to_json_schema` was made of. Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a schema without the ``x-clusterrpc``
    annotations (one this module did not write)."""
    extra = schema.get(VOCABULARY) if isinstance(schema, dict) else None
    if not isinstance(extra, dict):
        raise ConfigurationError(f"the schema has no {VOCABULARY} annotation")
    return PluginMetadata(name=extra["name"], type=extra["type"], version=extra["version"],
                          short_text=schema.get("description", ""),
                          long_text=extra.get("long_text", ""), fields=_fields(schema))
