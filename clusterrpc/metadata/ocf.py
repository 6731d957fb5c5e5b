"""A plugin's metadata as OCF 1.1 resource-agent XML, for Pacemaker tooling (pcs, Hawk).

The document is valid against the OCF 1.1 RelaxNG grammar (``spec/ocf/ra-api-1.1.rng``,
ClusterLabs/OCF-spec, MIT): ``<resource-agent name version>`` with ``<version>1.1</version>``,
the plugin's long and short descriptions, one ``<parameter>`` per configuration value, the
two actions that exist for a clusterrpc plugin — ``meta-data`` (``clusterrpc plugins
describe NAME --format ocf``) and ``validate-all`` (``clusterrpc config check``) — and a
``<special tag="clusterrpc">`` element holding the exact field list as JSON, so nothing of
the model is lost.

OCF parameters are flat and typed ``string``, ``integer`` or ``boolean``: a struct's fields
become parameters named ``struct.field``; an array is one ``string`` parameter (its value is
written as a JSON list); a ``double`` is a ``string``. What the type cannot say (special
type, length, regex, bounds, array items) is written in the parameter's long description.
Parameters are ``reloadable="1"``: the daemon applies a change on SIGHUP. A secret has no
``default``. OCF needs at least one parameter, so a plugin that takes no configuration has
no OCF document (:class:`~clusterrpc.errors.ConfigurationError`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Final

from clusterrpc.errors import ConfigurationError
from clusterrpc.metadata.model import Field, PluginMetadata, to_fields
from clusterrpc.metadata.validate import expected_of

__all__ = ["OCF_VERSION", "to_ocf_xml"]

OCF_VERSION: Final = "1.1"
_CONTENT: Final = {"string": "string", "integer": "integer", "boolean": "boolean",
                   "double": "string", "array": "string"}


def _text(parent: ET.Element, tag: str, text: str) -> None:
    element = ET.SubElement(parent, tag, lang="en")
    element.text = text


def _default_text(field: Field) -> str | None:
    if field.secret or field.default is None:
        return None
    if field.basictype == "boolean":
        return "true" if field.default else "false"
    if field.basictype == "array":
        return json.dumps(field.default)
    return str(field.default)


def _parameters(parent: ET.Element, fields: tuple[Field, ...], prefix: str) -> None:
    for field in fields:
        name = f"{prefix}{field.fieldname}"
        if field.basictype == "struct":
            _parameters(parent, field.fields, f"{name}.")
            continue
        parameter = ET.SubElement(parent, "parameter", name=name,
                                  required="1" if field.required else "0", reloadable="1")
        detail = f"Expected: {expected_of(field)}."
        if field.basictype == "array":
            assert field.items is not None
            detail += f" A JSON list; each item: {expected_of(field.items)}."
        if field.secret:
            detail += " Secret: write-only, never shown."
        _text(parameter, "longdesc", f"{field.long_text}\n{detail}".strip())
        _text(parameter, "shortdesc", field.short_text or field.label or name)
        content = ET.SubElement(parameter, "content", type=_CONTENT[field.basictype])
        default = _default_text(field)
        if default is not None:
            content.set("default", default)


def to_ocf_xml(meta: PluginMetadata) -> str:
    """The OCF 1.1 resource-agent metadata document of ``meta`` (module docstring), as text
    with an XML declaration. Raises :class:`~clusterrpc.errors.ConfigurationError` for a
    plugin that takes no configuration (OCF needs a parameter)."""
    if not meta.fields:
        raise ConfigurationError(f"{meta.type} {meta.name} takes no configuration, and an OCF "
                                 "document needs at least one parameter")
    root = ET.Element("resource-agent", name=meta.name, version=meta.version)
    ET.SubElement(root, "version").text = OCF_VERSION
    _text(root, "longdesc", meta.long_text or meta.short_text or meta.name)
    _text(root, "shortdesc", meta.short_text or meta.name)
    _parameters(ET.SubElement(root, "parameters"), meta.fields, "")
    actions = ET.SubElement(root, "actions")
    ET.SubElement(actions, "action", name="meta-data", timeout="5s")
    ET.SubElement(actions, "action", name="validate-all", timeout="5s")
    special = ET.SubElement(root, "special", {"tag": "clusterrpc"})
    fields = ET.SubElement(special, "fields", type=meta.type)
    fields.text = json.dumps(to_fields(meta), sort_keys=True)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
