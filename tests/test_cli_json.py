"""``--json`` on every command that prints something: each (sub)command's parser has it, and
the commands that need no node (``codecs``, ``roundtrip``, ``decode``, the ``keys``
subcommands) print exactly one JSON document on standard output with it. The commands that
call a node are checked against real nodes in their own tests (``test_cli_rpc``,
``test_cli_members``, ``test_cli_leader``, ``test_cli_local``, ``test_cli_status``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.defaults import ENV_CONFIG, ENV_KEYRING
from clusterrpc.cli.exits import EXIT_OK
from clusterrpc.cli.main import build_parser
from clusterrpc.codecs import default_registry
from tests.conftest import scaled
from tests.test_cli_rpc import run

pytestmark = pytest.mark.timeout(scaled(60.0))

NO_JSON = {
    "encode": "writes a binary body, not text",
    "serve": "a daemon: it writes logs, not a result",
    "daemon": "a daemon: it writes logs, not a result",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEYRING, raising=False)
    monkeypatch.setenv(ENV_CONFIG, "")


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                  ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs something: (its words, its parser)."""
    subparsers = [action for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction)]
    if not subparsers or (path and path[0] == "encode"):
        yield path, parser
        return
    for action in subparsers:
        for name, child in action.choices.items():
            yield from leaf_commands(child, (*path, name))


def test_every_command_that_prints_has_json() -> None:
    commands = dict(leaf_commands(build_parser()))
    assert {("status",), ("keys", "list"), ("local", "ls"), ("call",)} <= set(commands)
    missing = [" ".join(words) for words, parser in commands.items()
               if words[0] not in NO_JSON
               and "--json" not in {option for action in parser._actions
                                    for option in action.option_strings}]
    assert missing == []


def one_document(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Any:
    status, out, err = run(capsys, *argv)
    assert (status, err) == (EXIT_OK, ""), err
    return json.loads(out)  # one document, nothing around it


def test_codecs_json(capsys: pytest.CaptureFixture[str]) -> None:
    document = one_document(capsys, "codecs", "--json")
    assert [entry["name"] for entry in document] == default_registry().names()
    assert set(document[0]) == {"name", "id", "media_type", "origin"}


def test_roundtrip_json(capsys: pytest.CaptureFixture[str]) -> None:
    document = one_document(capsys, "roundtrip", "--json", "--codec", "xmlrpc", "--codec",
                            "json")
    assert [entry["codec"] for entry in document["codecs"]] == ["xmlrpc", "json"]
    assert (document["exact"], document["total"]) == (2, 2)
    assert all(entry["exact"] and entry["call"] > 0 for entry in document["codecs"])
    shown = one_document(capsys, "roundtrip", "--json", "--show", "--codec", "xmlrpc")
    assert "election.vote" in shown["codecs"][0]["call_body"]


def test_decode_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body = tmp_path / "call.xml"
    body.write_bytes(default_registry().create("xmlrpc").encode_call("a.b", [1, "x"]))
    assert one_document(capsys, "decode", "--json", "call", body) == {
        "method": "a.b", "params": [1, "x"]}


def test_keys_json_documents(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "n1.keys"
    created = one_document(capsys, "keys", "new", "--json", "--scheme", "hmac-sha256",
                           "--id", "k1", "--cluster", "LAB", path)
    assert created["action"] == "new"
    assert created["key"] == "k1"
    assert created["keyring"] == str(path)
    assert created["signing"] == "k1"
    assert created["cluster"] == "LAB"
    assert [key["id"] for key in created["keys"]] == ["k1"]
    listed = one_document(capsys, "keys", "list", "--json", path)
    assert {key: value for key, value in created.items() if key not in ("action", "key")} == \
        listed
    added = one_document(capsys, "keys", "add", "--json", "--scheme", "ed25519", "--node",
                         "n1", "--id", "n1-ed", path)
    assert (added["action"], added["key"], added["node"]) == ("add", "n1-ed", "n1")
    used = one_document(capsys, "keys", "use", "--json", path, "n1-ed")
    assert (used["action"], used["signing"]) == ("use", "n1-ed")
    exported = one_document(capsys, "keys", "export-public", "--json", path)
    assert [entry["id"] for entry in exported["public_keys"]] == ["n1-ed"]
    assert exported["output"] is None
    assert "[[trusted]]" in exported["toml"] or "trusted" in exported["toml"]
    out = tmp_path / "n1.pub"
    written = one_document(capsys, "keys", "export-public", "--json", path, "-o", out)
    assert written["output"] == str(out)
    assert out.exists()
    removed = one_document(capsys, "keys", "remove", "--json", path, "k1")
    assert removed["action"] == "remove"
    assert [key["id"] for key in removed["keys"]] == ["n1-ed"]


def test_http_credentials_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "n1.keys"
    assert run(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "k1", path)[0] == 0
    status, out, err = run(capsys, "keys", "http-credentials", "--json", path, "--url",
                           "http://127.0.0.1:7400/RPC2")
    assert status == EXIT_OK
    document = json.loads(out)
    assert document["user"] == "k1"
    assert document["url"] == f"http://k1:{document['token']}@127.0.0.1:7400/RPC2"
    assert "the token is a secret" in err  # the warning stays on standard error


def test_main_help_points_at_the_exit_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    text = " ".join(out.split())
    assert "clusterrpc.cli.exits" in text
    assert "--json" in text
    assert "$CLUSTERRPC_CONFIG" in text
