"""Plugin metadata: one typed model of a plugin's configuration (``spec/metadata.md``).

A plugin declares its configuration once, as a :class:`PluginMetadata` of :class:`Field`\\ s
(:mod:`clusterrpc.metadata.model`: the framework paper's field list, typed), and everything
else is generated from it:

* the plain field list (:func:`to_fields`/:func:`from_fields`) and an XML-RPC struct
  (:meth:`PluginMetadata.to_value`, what ``system.describePlugin`` answers);
* JSON Schema 2020-12 with an ``x-clusterrpc`` annotation for what JSON Schema lacks
  (:func:`to_json_schema`/:func:`from_json_schema`);
* OCF 1.1 resource-agent XML for Pacemaker tooling (:func:`to_ocf_xml`);
* validation that reports every problem with its field path (:func:`validate`,
  :func:`check`, :class:`ConfigProblem`), with special types
  (:mod:`clusterrpc.metadata.specialtypes`) and regexes restricted to the subset Python and
  ECMA-262 share (:mod:`clusterrpc.metadata.regex`).

Secrets are write-only: no default, ``writeOnly`` in JSON Schema, no default in OCF, and
``********`` wherever a problem would show the value. This package does no I/O.
"""

from __future__ import annotations

from clusterrpc.metadata.jsonschema import from_json_schema, to_json_schema
from clusterrpc.metadata.model import BASICTYPES, Field, PluginMetadata, from_fields, to_fields
from clusterrpc.metadata.ocf import to_ocf_xml
from clusterrpc.metadata.regex import check_regex
from clusterrpc.metadata.specialtypes import SPECIALTYPES, SpecialType
from clusterrpc.metadata.validate import (
    MASK,
    ConfigProblem,
    apply_defaults,
    check,
    validate,
)

__all__ = [
    "BASICTYPES",
    "MASK",
    "SPECIALTYPES",
    "ConfigProblem",
    "Field",
    "PluginMetadata",
    "SpecialType",
    "apply_defaults",
    "check",
    "check_regex",
    "from_fields",
    "from_json_schema",
    "to_fields",
    "to_json_schema",
    "to_ocf_xml",
    "validate",
]
