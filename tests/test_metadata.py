"""Plugin metadata (``clusterrpc.metadata``, ``spec/metadata.md``): the model's own checks, the
field list and the XML-RPC struct round-tripping, JSON Schema that the 2020-12 meta-schema
accepts and that the ``jsonschema`` package applies as our validator does, OCF XML that the
OCF 1.1 RelaxNG grammar accepts, the regex subset, validation that reports every problem with
its path and never a secret, and the golden files in ``spec/vectors/metadata/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lxml import etree

from clusterrpc.codecs import get_codec
from clusterrpc.codecs.base import ReplyMessage
from clusterrpc.errors import ConfigProblemsError, ConfigurationError
from clusterrpc.metadata import (
    MASK,
    SPECIALTYPES,
    Field,
    PluginMetadata,
    apply_defaults,
    check,
    check_regex,
    from_fields,
    from_json_schema,
    to_fields,
    to_json_schema,
    to_ocf_xml,
    validate,
)
from clusterrpc.services.kvstore import KeyValueStore

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors" / "metadata"
GRAMMAR = etree.RelaxNG(etree.parse(str(ROOT / "spec" / "ocf" / "ra-api-1.1.rng")))

PORT = Field(fieldname="port", label="Port", basictype="integer", minimum=1, maximum=65535,
             default=7400)
RICH = PluginMetadata(
    name="storage", type="service", version="2.1", short_text="Replicated storage",
    long_text="Every kind of field the model has.",
    fields=(
        Field(fieldname="name", label="Name", basictype="string", length=32,
              regex="[a-z][a-z0-9-]*", required=True, short_text="The store's name"),
        Field(fieldname="bind", label="Bind address", basictype="string", specialtype="ipv4",
              default="127.0.0.1"),
        Field(fieldname="bind6", label="IPv6 bind address", basictype="string",
              specialtype="ipv6"),
        Field(fieldname="peer", label="Peer", basictype="string", specialtype="hostport"),
        Field(fieldname="data_dir", label="Data directory", basictype="string",
              specialtype="path", default="/var/lib/storage"),
        Field(fieldname="sync_every", label="Sync interval", basictype="double",
              specialtype="duration", maximum=3600, default=1.5),
        Field(fieldname="owner", label="Owner", basictype="string", specialtype="nodename"),
        Field(fieldname="cluster", label="Cluster", basictype="string",
              specialtype="clustername"),
        Field(fieldname="ratio", label="Ratio", basictype="double", minimum=0.0, maximum=1.0,
              default=0.5),
        Field(fieldname="verbose", label="Verbose", basictype="boolean", default=False),
        Field(fieldname="password", label="Password", basictype="string", secret=True,
              length=64, long_text="Never shown."),
        Field(fieldname="tags", label="Tags", basictype="array", length=4,
              items=Field(fieldname="tag", basictype="string", length=10), default=["a"]),
        Field(fieldname="servers", label="Servers", basictype="array",
              items=Field(fieldname="server", basictype="struct", fields=(
                  Field(fieldname="host", basictype="string", required=True), PORT))),
        Field(fieldname="limits", label="Limits", basictype="struct", fields=(
            Field(fieldname="max_bytes", basictype="integer", minimum=0),
            Field(fieldname="custom", basictype="string", specialtype="colour"),
        )),
    ),
)  # fmt: skip
MODELS = [RICH, KeyValueStore.config_metadata,
          PluginMetadata(name="one", type="codec", version="1", short_text="One field",
                         fields=(Field(fieldname="level", basictype="integer"),))]


@pytest.mark.parametrize("meta", MODELS, ids=lambda meta: meta.name)
def test_the_field_list_and_the_struct_round_trip(meta: PluginMetadata) -> None:
    assert from_fields(to_fields(meta)) == meta.fields
    value = meta.to_value()
    assert PluginMetadata.from_value(value) == meta
    codec = get_codec("xmlrpc")  # only XML-RPC types: it crosses the wire unchanged
    reply = codec.decode_response(codec.encode_reply(value))
    assert isinstance(reply, ReplyMessage)
    assert reply.value == value
    assert "None" not in repr(value)


@pytest.mark.parametrize("meta", MODELS, ids=lambda meta: meta.name)
def test_json_schema_is_valid_2020_12_and_round_trips(meta: PluginMetadata) -> None:
    schema = to_json_schema(meta)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert from_json_schema(json.loads(json.dumps(schema))) == meta


def test_secrets_are_write_only_in_every_form() -> None:
    schema = to_json_schema(RICH)
    password = schema["properties"]["password"]
    assert password["writeOnly"] is True
    assert "default" not in password
    assert password["x-clusterrpc"]["secret"] is True
    with pytest.raises(ConfigurationError, match="a secret has no default"):
        Field(fieldname="token", basictype="string", secret=True, default="hunter2hunter2")
    ocf = etree.fromstring(to_ocf_xml(RICH).encode())
    content = ocf.find("parameters/parameter[@name='password']/content")
    assert content is not None
    assert "default" not in content.attrib


GOOD: dict[str, Any] = {"name": "main", "servers": [{"host": "a", "port": 1}],
                        "tags": ["x", "y"], "limits": {"max_bytes": 10}}
CONFIGS: list[dict[str, Any]] = [
    GOOD,
    {"name": "main"},
    {**GOOD, "ratio": 1},                      # an integer is a double
    {**GOOD, "sync_every": 2},
    {**GOOD, "name": "Main"},                  # the regex, full match
    {**GOOD, "name": "m" * 33},                # the length
    {"tags": []},                              # name is required
    {**GOOD, "ratio": 1.5},                    # maximum
    {**GOOD, "verbose": 1},                    # a number is not a boolean
    {**GOOD, "limits": {"max_bytes": True}},   # a boolean is not an integer
    {**GOOD, "tags": ["a", "b", "c", "d", "e"]},
    {**GOOD, "tags": ["much too long"]},
    {**GOOD, "servers": [{"port": 70000}]},
    {**GOOD, "colour": "red"},                 # unknown field
    {**GOOD, "limits": {"colour": 1}},
    {**GOOD, "bind": "10.0.0.300"},            # format ipv4
    {**GOOD, "data_dir": "relative"},          # path
    {**GOOD, "password": "p" * 65},
    {**GOOD, "sync_every": -1},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_jsonschema_package_agrees_with_validate(config: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        to_json_schema(RICH), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert validator.is_valid(config) == (validate(RICH, config) == [])


def test_special_types_check_what_json_schema_cannot_say() -> None:
    for name, bad in (("peer", "host"), ("peer", "h:0"), ("peer", "[::1"),
                      ("owner", "bad\x00name"), ("cluster", "A//B"), ("cluster", "A/A"),
                      ("bind6", "fe80::1%eth0"), ("sync_every", "5 minutes")):
        problems = validate(RICH, {**GOOD, name: bad}, path="p")
        assert [problem.path for problem in problems] == [f"p.{name}"], (name, bad)
    for name, good in (("peer", "db.example:5432"), ("peer", "[::1]:7400"),
                       ("peer", "10.0.0.1:1"), ("owner", "n1"), ("cluster", "ORG/UK/EDIN"),
                       ("bind6", "::1"), ("sync_every", "250ms")):
        assert validate(RICH, {**GOOD, name: good}) == [], (name, good)
    assert set(SPECIALTYPES) == {"ipv4", "ipv6", "hostport", "path", "duration", "nodename",
                                 "clustername"}


def test_every_problem_is_reported_with_its_path_and_secrets_are_masked() -> None:
    config = {"name": "Bad!", "ratio": "half", "verbose": "yes", "password": "x" * 70,
              "servers": [{"host": "a"}, {"port": 0}], "colour": "red"}
    problems = validate(RICH, config, path="plugins.storage")
    by_path = {problem.path: problem for problem in problems}
    assert set(by_path) == {"plugins.storage.name", "plugins.storage.ratio",
                            "plugins.storage.verbose", "plugins.storage.password",
                            "plugins.storage.servers[1].host", "plugins.storage.servers[1].port",
                            "plugins.storage.colour"}
    assert by_path["plugins.storage.ratio"].value == "'half'"
    assert by_path["plugins.storage.ratio"].expected == "double 0.0..1.0"
    assert by_path["plugins.storage.servers[1].port"].message == "below the minimum 1"
    assert by_path["plugins.storage.servers[1].host"].message == "required"
    assert by_path["plugins.storage.password"].value == MASK
    with pytest.raises(ConfigProblemsError) as error:
        check(RICH, config, where="plugins.storage")
    assert len(error.value.problems) == 7
    assert "x" * 70 not in str(error.value)
    assert "plugins.storage.servers[1].port: below the minimum 1" in str(error.value)


def test_defaults_are_filled_in_and_special_types_normalised() -> None:
    config = apply_defaults(RICH, {"name": "main", "sync_every": "2m",
                                   "servers": [{"host": "a"}]})
    assert config["bind"] == "127.0.0.1"
    assert config["sync_every"] == 120.0
    assert config["ratio"] == 0.5
    assert config["verbose"] is False
    assert config["tags"] == ["a"]
    assert config["servers"] == [{"host": "a", "port": 7400}]
    assert "password" not in config
    assert check(RICH, {"name": "main"})["sync_every"] == 1.5


@pytest.mark.parametrize("meta", MODELS, ids=lambda meta: meta.name)
def test_ocf_xml_is_valid_ocf_1_1(meta: PluginMetadata) -> None:
    document = etree.fromstring(to_ocf_xml(meta).encode())
    assert GRAMMAR.validate(document), GRAMMAR.error_log
    assert document.findtext("version") == "1.1"


def test_ocf_flattens_structs_and_keeps_the_whole_model() -> None:
    document = etree.fromstring(to_ocf_xml(RICH).encode())
    names = [parameter.get("name") for parameter in document.iterfind("parameters/parameter")]
    assert "limits.max_bytes" in names
    assert "limits.custom" in names
    assert "servers" in names
    types = {parameter.get("name"): parameter.find("content").get("type")  # type: ignore[union-attr]
             for parameter in document.iterfind("parameters/parameter")}
    assert types["ratio"] == "string"
    assert types["verbose"] == "boolean"
    assert types["limits.max_bytes"] == "integer"
    required = document.find("parameters/parameter[@name='name']")
    assert required is not None
    assert required.get("required") == "1"
    special = document.findtext("special/fields")
    assert special is not None
    assert from_fields(json.loads(special)) == RICH.fields
    with pytest.raises(ConfigurationError, match="takes no configuration"):
        to_ocf_xml(PluginMetadata(name="empty", type="codec"))


@pytest.mark.parametrize(("fields", "says"), [
    (lambda: (Field(fieldname="a"), Field(fieldname="a")), "appears twice"),
    (lambda: (Field(fieldname="a", basictype="struct"),), "a struct needs fields"),
    (lambda: (Field(fieldname="a", basictype="array"),), "an array needs items"),
    (lambda: (Field(fieldname="a", basictype="integer", regex="[0-9]"),),
     "regex applies to strings"),
    (lambda: (Field(fieldname="a", basictype="integer", default="1"),),
     "the default '1' is invalid"),
    (lambda: (Field(fieldname="a", basictype="integer", minimum=5, maximum=1),),
     "minimum 5 > maximum"),
    (lambda: (Field(fieldname="a", basictype="float"),), "basictype 'float'"),
    (lambda: (Field(fieldname="a", basictype="integer", specialtype="ipv4"),), "ipv4 is a string"),
    (lambda: (Field(fieldname="A"),), "field name 'A'"),
    (lambda: (Field(fieldname="a", length=3, basictype="boolean"),), "length is a count"),
])
def test_invalid_models_are_refused(fields: Callable[[], tuple[Field, ...]], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        PluginMetadata(name="bad", type="service", fields=fields())


@pytest.mark.parametrize("pattern", [
    "[a-z]+", "[A-Za-z0-9_-]{16,128}", "a|b|c", "(ab)+\\1", "(?:x)*?", "(?=a)a", "(?!b)a",
    "\\d{2,}", "\\w\\W\\D\\b", "[^\\n\\r]", "\\x41\\u00e9", "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\/",
    "[.*+?]", "[a\\-z]", "x{3}", "",
])
def test_regexes_in_the_shared_subset_are_accepted(pattern: str) -> None:
    check_regex(pattern)


@pytest.mark.parametrize(("pattern", "construct"), [
    ("a.b", "'.'"), ("^a", "anchor '^'"), ("a$", "anchor '$'"), ("\\s", "escape \\s"),
    ("\\A", "escape \\A"), ("\\Z", "escape \\Z"), ("\\p{L}", "escape \\p"),
    ("\\0", "escape \\0"), ("(?<=a)b", "group '(?<='"), ("(?P<n>a)", "group '(?P<'"),
    ("(?i)a", "group '(?i)"), ("(?>a)", "group '(?>a'"), ("(?(1)a|b)", "group '(?(1'"),
    ("(?#c)", "group '(?#c'"), ("a*+", "possessive"), ("a{2}+", "possessive"),
    ("a{,3}", "literal '{'"), ("a{", "literal '{'"), ("}", "literal '}'"),
    ("[]a]", "']' first"), ("[a[b]]", "'[' in a class"), ("[a&&b]", "set operation"),
    ("[a--b]", "set operation"), ("[a", "unterminated"), ("*a", "nothing to repeat"),
    ("a\\", "trailing backslash"), ("(a", "does not compile"),
])
def test_regexes_outside_the_subset_are_refused_naming_the_construct(pattern: str,
                                                                     construct: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        check_regex(pattern, where="field 'x'")
    assert construct in str(error.value)
    assert str(error.value).startswith("field 'x': regex ")


def test_a_regex_is_full_matched() -> None:
    meta = PluginMetadata(name="r", type="service", fields=(
        Field(fieldname="code", basictype="string", regex="[0-9]{3}"),))
    assert validate(meta, {"code": "123"}) == []
    assert validate(meta, {"code": "1234"}) != []
    assert validate(meta, {"code": "x123"}) != []
    assert validate(meta, {"code": "123\n"}) != []  # Python's $ would have matched here


def golden() -> dict[str, str]:
    meta = KeyValueStore.config_metadata
    return {
        "kvstore.fields.json": json.dumps(to_fields(meta), indent=2) + "\n",
        "kvstore.schema.json": json.dumps(to_json_schema(meta), indent=2) + "\n",
        "kvstore.ocf.xml": to_ocf_xml(meta),
    }


def test_the_golden_files_are_what_the_code_writes() -> None:
    # Regenerate with: python -c "from tests.test_metadata import write_golden; write_golden()"
    for name, text in golden().items():
        assert (VECTORS / name).read_text() == text, name


def write_golden() -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    for name, text in golden().items():
        (VECTORS / name).write_text(text)


def test_every_installed_plugins_model_round_trips() -> None:
    from clusterrpc.plugins import plugin_types  # noqa: PLC0415

    seen = 0
    for registry in plugin_types().values():
        for name in registry.names():
            meta = registry.metadata(name)
            schema = to_json_schema(meta)
            jsonschema.Draft202012Validator.check_schema(schema)
            assert from_json_schema(schema) == meta
            assert PluginMetadata.from_value(meta.to_value()) == meta
            if meta.fields:  # OCF needs a parameter (spec/metadata.md)
                assert GRAMMAR.validate(etree.fromstring(to_ocf_xml(meta).encode()))
            seen += 1
    assert seen >= 9  # 3 codecs, 5 schemes, kvstore at least
