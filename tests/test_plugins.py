"""One plugin mechanism for every type (``clusterrpc.plugins``): registries validate each
plugin's metadata when it registers; ``clusterrpc plugins list|describe`` and ``config
check``; a daemon running the built-in ``kvstore`` service plugin from a ``[plugins.kvstore]``
table, describing it over RPC (``system.describePlugin``), reconfiguring it through
``plugins.configure`` and on SIGHUP — and never showing its secret."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from lxml import etree

import clusterrpc
from clusterrpc import Fault, remote
from clusterrpc.cli.exits import EXIT_OK, EXIT_USAGE
from clusterrpc.codecs.registry import CodecRegistry
from clusterrpc.errors import ConfigurationError, FaultCode
from clusterrpc.keyring import Keyring
from clusterrpc.metadata import Field, PluginMetadata
from clusterrpc.plugins import describe_plugin, find_plugin, list_plugins, plugin_types
from clusterrpc.services import ServicePlugin, ServicePluginRegistry
from tests.conftest import scaled
from tests.test_cli_daemon import start, wait_for_log
from tests.test_cli_rpc import run_cli, write_keyring

pytestmark = pytest.mark.timeout(scaled(90.0))

RNG = Path(__file__).resolve().parent.parent / "spec" / "ocf" / "ra-api-1.1.rng"
TOKEN = "s3cret-Token_0123456789"  # what the daemon's [plugins.kvstore] write_token is


# -- the registries ----------------------------------------------------------------------------


def test_every_type_is_registered_with_its_plugins() -> None:
    types = plugin_types()
    assert set(types) == {"codec", "auth", "service"}
    assert "xmlrpc" in types["codec"]
    assert "hmac-sha256" in types["auth"]
    assert "kvstore" in types["service"]
    rows = {(row["type"], row["name"]): row for row in list_plugins()}
    assert rows[("service", "kvstore")]["short_text"].startswith("A small key-value store")
    # A plugin without config_metadata gets a model with no fields, from its docstring.
    kind, meta = find_plugin("json")
    assert kind == "codec"
    assert meta.fields == ()
    assert meta.short_text
    assert rows[("codec", "json")]["version"] == meta.version


class _Greeter(ServicePlugin):
    """Greets."""

    name = "greeter"
    config_metadata: ClassVar[Any] = PluginMetadata(
        name="greeter", type="service", version="1.0", short_text="Greets", long_text="",
        fields=(Field(fieldname="greeting", label="Greeting", basictype="string", length=20,
                      default="hello"),))

    @remote
    def greet(self, who: str) -> str:
        return f"{self.config['greeting']}, {who}"


def test_a_service_plugin_is_validated_configured_and_created() -> None:
    registry = ServicePluginRegistry([_Greeter])
    assert registry.names() == ["greeter"]
    plugin = registry.create("greeter", {})
    assert plugin.config == {"greeting": "hello"}
    with pytest.raises(ConfigurationError) as error:
        registry.create("greeter", {"greeting": "x" * 21, "colour": "red"}, path="p.greeter")
    problems = error.value.problems  # type: ignore[attr-defined]
    assert sorted(problem.path for problem in problems) == ["p.greeter.colour",
                                                             "p.greeter.greeting"]


def test_metadata_that_names_another_plugin_or_type_is_refused() -> None:
    class Wrong(_Greeter):
        name = "wrong"

    with pytest.raises(ConfigurationError, match="describes service 'greeter'"):
        ServicePluginRegistry([Wrong])

    class NotAModel(_Greeter):
        name = "bad"
        config_metadata: ClassVar[Any] = {"fields": []}

    with pytest.raises(ConfigurationError, match=r"must be a clusterrpc\.metadata"):
        ServicePluginRegistry([NotAModel])


def test_a_codec_plugin_may_declare_metadata_of_its_own_type() -> None:
    from clusterrpc.codecs.json import JsonCodec  # noqa: PLC0415

    class Described(JsonCodec):
        name = "described"
        codec_id = 200
        config_metadata = PluginMetadata(name="described", type="codec", version="2",
                                         short_text="JSON, described", long_text="",
                                         fields=())

    registry = CodecRegistry([Described])
    assert registry.metadata("described").version == "2"

    class Mistyped(JsonCodec):
        name = "mistyped"
        codec_id = 201
        config_metadata = PluginMetadata(name="mistyped", type="service", version="2",
                                         short_text="", long_text="", fields=())

    with pytest.raises(ConfigurationError, match="not codec 'mistyped'"):
        CodecRegistry([Mistyped])


def test_describe_plugin_is_the_metadata_as_a_value_and_faults_for_unknown_names() -> None:
    value = describe_plugin("kvstore")
    assert value["name"] == "kvstore"
    rows = value["fields"]
    assert isinstance(rows, list)
    fields = {field["fieldname"]: field for field in rows}
    assert fields["write_token"]["secret"] is True
    assert "default" not in fields["write_token"]
    with pytest.raises(Fault) as fault:
        describe_plugin("nope")
    assert fault.value.code == FaultCode.INVALID_PARAMS
    assert "kvstore" in fault.value.message  # names what is installed


# -- the commands ------------------------------------------------------------------------------


def test_plugins_list_and_its_type_filter() -> None:
    result = run_cli("plugins", "list", "--json")
    assert result.returncode == EXIT_OK, result.stderr
    rows = json.loads(result.stdout)
    assert {(row["type"], row["name"]) for row in rows} >= {
        ("codec", "xmlrpc"), ("auth", "ed25519"), ("service", "kvstore")}
    services = run_cli("plugins", "list", "--type", "service")
    assert services.returncode == EXIT_OK
    assert services.stdout.splitlines()[0].split() == ["TYPE", "NAME", "VERSION",
                                                       "DESCRIPTION"]
    assert all(line.startswith("service ") for line in services.stdout.splitlines()[1:])
    unknown = run_cli("plugins", "list", "--type", "gizmo")
    assert unknown.returncode == EXIT_USAGE
    assert "types: auth, codec, service" in unknown.stderr


def test_plugins_describe_in_every_format() -> None:
    fields = run_cli("plugins", "describe", "kvstore")
    assert fields.returncode == EXIT_OK, fields.stderr
    assert "write_token: string [secret]" in fields.stdout
    assert "max_keys: integer" in fields.stdout
    as_json = json.loads(run_cli("plugins", "describe", "kvstore", "--json").stdout)
    assert [field["fieldname"] for field in as_json["fields"]][:2] == ["max_keys",
                                                                       "max_value_length"]
    schema = json.loads(run_cli("plugins", "describe", "kvstore", "--format",
                                "json-schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["write_token"]["writeOnly"] is True
    ocf = run_cli("plugins", "describe", "kvstore", "--format", "ocf")
    assert ocf.returncode == EXIT_OK, ocf.stderr
    grammar = etree.RelaxNG(etree.parse(str(RNG)))
    document = etree.fromstring(ocf.stdout.encode())
    assert grammar.validate(document), grammar.error_log
    codec = run_cli("plugins", "describe", "xmlrpc")
    assert "(takes no configuration)" in codec.stdout
    missing = run_cli("plugins", "describe", "nope")
    assert missing.returncode == EXIT_USAGE
    assert "no plugin 'nope' is installed" in missing.stderr


def node_toml(directory: Path, plugins: str, *, listen: str = "tcp://127.0.0.1:0") -> Path:
    write_keyring(directory / "cluster.keys")
    path = directory / "node.toml"
    path.write_text(f'name = "n1"\nkeyring = "cluster.keys"\nlisten = ["{listen}"]\n'
                    f"timeout = 5\ndrain_timeout = 1\n\n{plugins}")
    return path


FIVE_ERRORS = """
[plugins.kvstore]
max_keys = "many"               # 1: a string for an integer
max_value_length = 0            # 2: below the minimum
write_token = "tooshort!!"      # 3: the regex (a secret: never echoed)
owner = "bad\\u0000name"        # 4: not a node name
colour = "red"                  # 5: no such field

[plugins.nope]                  # 6: no such plugin
"""


def test_config_check_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    config = node_toml(tmp_path, FIVE_ERRORS)
    result = run_cli("config", "check", config)
    assert result.returncode == EXIT_USAGE
    assert "6 problem(s)" in result.stderr
    for path in ("plugins.kvstore.max_keys", "plugins.kvstore.max_value_length",
                 "plugins.kvstore.write_token", "plugins.kvstore.owner",
                 "plugins.kvstore.colour", "plugins.nope"):
        assert f"  {path}: " in result.stderr, result.stderr
    assert "tooshort!!" not in result.stderr
    assert "********" in result.stderr
    as_json = run_cli("config", "check", config, "--json")
    assert as_json.returncode == EXIT_USAGE
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    by_path = {problem["path"]: problem for problem in report["problems"]}
    assert len(by_path) == 6
    assert by_path["plugins.kvstore.max_keys"]["value"] == "'many'"
    assert by_path["plugins.kvstore.write_token"]["value"] == "********"
    assert "tooshort!!" not in as_json.stdout
    # The daemon refuses the same file before it listens, with the same report.
    daemon = run_cli("daemon", "--config", config)
    assert daemon.returncode == EXIT_USAGE
    assert "plugins.kvstore.colour" in daemon.stderr
    assert "tooshort!!" not in daemon.stderr


def test_config_check_of_a_good_file(tmp_path: Path) -> None:
    config = node_toml(tmp_path, "[plugins.kvstore]\nmax_keys = 10\n")
    result = run_cli("config", "check", config, "--json")
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["plugins"] == ["kvstore"]
    human = run_cli("config", "check", config)
    assert human.stdout.strip().endswith("0 service(s), 1 plugin(s))")


# -- a daemon running a plugin -----------------------------------------------------------------


def test_a_daemon_runs_describes_and_reconfigures_its_plugin(tmp_path: Path) -> None:
    config = node_toml(tmp_path, f'[plugins.kvstore]\nmax_keys = 2\nwrite_token = "{TOKEN}"\n')
    keyring = Keyring.load(tmp_path / "cluster.keys")
    server = start(config, 1, "--log-level", "debug")
    try:
        url = server.urls["tcp"]
        with clusterrpc.connect(url, keyring=keyring, timeout=scaled(5)) as n1:
            with pytest.raises(Fault) as refused:
                n1.kvstore.set("role", "db")
            assert refused.value.code == FaultCode.FORBIDDEN
            assert n1.kvstore.set("role", "db", TOKEN) is True
            assert n1.kvstore.get("role") == "db"
            assert n1.kvstore.set("zone", "a", TOKEN) is True
            with pytest.raises(Fault, match="full"):
                n1.kvstore.set("rack", "1", TOKEN)
            described = n1.system.describePlugin("kvstore")
            assert described == describe_plugin("kvstore")
            assert n1.system.describePlugin("kvstore", "service") == described
            assert any(row["name"] == "kvstore" for row in n1.system.listPlugins())
            shown = n1.plugins.configuration("kvstore")
            assert shown["values"]["max_keys"] == 2
            assert shown["secrets_set"] == ["write_token"]
            assert "write_token" not in shown["values"]
            # A bad submission: every problem, by path; nothing applied.
            bad = n1.plugins.configure("kvstore", {"max_keys": "x", "colour": 1})
            assert bad["applied"] is False
            assert sorted(p["path"] for p in bad["problems"]) == [
                "plugins.kvstore.colour", "plugins.kvstore.max_keys"]
            # A good one, leaving the secret out: applied, and the token is kept.
            good = n1.plugins.configure("kvstore", {"max_keys": 3})
            assert good == {"applied": True, "changed": True, "problems": []}
            assert n1.kvstore.set("rack", "1", TOKEN) is True
            assert n1.plugins.configuration("kvstore")["secrets_set"] == ["write_token"]
            # SIGHUP applies node.toml's table again.
            config.write_text(config.read_text().replace("max_keys = 2", "max_keys = 4"))
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "SIGHUP: plugins reconfigured: kvstore")
            assert n1.plugins.configuration("kvstore")["values"]["max_keys"] == 4
            # A bad table on SIGHUP keeps the running configuration.
            config.write_text(config.read_text().replace("max_keys = 4", "max_keys = -1"))
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "SIGHUP: keeping the plugins' configuration")
            assert n1.plugins.configuration("kvstore")["values"]["max_keys"] == 4
            everything = json.dumps([described, n1.system.listPlugins(), shown,
                                     n1.plugins.list()])
            assert TOKEN not in everything
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=scaled(15)) == 0
    finally:
        server.kill()
    time.sleep(0)  # the log is complete once the process exited
    assert TOKEN not in server.stderr_path.read_text()
