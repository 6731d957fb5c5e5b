"""``clusterrpc keys``: every subcommand in-process, exit codes, JSON output, the environment
default, rotation across two nodes, ed25519 trust, and runs of the real command (one of them
``http-credentials`` giving curl and ``xmlrpc.client`` what they need to call a real node)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clusterrpc import Node, current_call, remote
from clusterrpc.auth import get_scheme
from clusterrpc.cli.defaults import ENV_CONFIG
from clusterrpc.cli.keys import ENV_KEYRING, url_with_credentials
from clusterrpc.cli.main import main
from clusterrpc.errors import ConfigurationError, UnknownKeyError, UnknownSenderError
from clusterrpc.keyring import Keyring, fingerprint
from clusterrpc.transports.http import http_token
from tests.conftest import time_scale
from tests.rpc_helpers import LoopThread

T = TypeVar("T")
WAIT = 30.0 * time_scale()
"""Upper bound for a process or a call that should take a fraction of a second."""


@pytest.fixture(autouse=True)
def _no_keyring_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEYRING, raising=False)
    monkeypatch.setenv(ENV_CONFIG, "")  # no client configuration file: not the user's own


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``clusterrpc ARGV`` in-process; return (exit status, stdout, stderr)."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse exits on usage errors
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    status, out, err = run(capsys, *argv)
    assert (status, err) == (0, ""), err
    return out


def fails(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """Run a command that must fail as a usage/keyring error: exit 2, one line on stderr."""
    status, out, err = run(capsys, *argv)
    assert status == 2, (out, err)
    assert err.startswith("clusterrpc: error: ")
    assert err.count("\n") == 1
    return err


def secrets_of(keyring: Keyring) -> list[str]:
    """Every textual form of every secret in ``keyring``."""
    forms = []
    for key in keyring.keys.values():
        forms += [key.secret.hex(), base64.b64encode(key.secret).decode(), repr(key.secret)]
    return forms


# -- new -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["hmac-sha256", "blake2b", "secretbox"])
def test_new_shared_key(capsys: pytest.CaptureFixture[str], tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "node.keys"
    out = ok(capsys, "keys", "new", "--scheme", scheme, path)
    assert path.stat().st_mode & 0o777 == 0o600
    keyring = Keyring.load(path)
    key = keyring.signing_key()
    assert key.scheme == scheme
    assert key.key_id.startswith(f"{scheme}-")
    assert f"key {key.key_id} ({scheme}) signs" in out
    assert keyring.node is None


def test_new_with_cluster_kept_by_add(capsys: pytest.CaptureFixture[str], tmp_path: Path
                                      ) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--cluster", "ORG/UK/EDIN", path)
    assert Keyring.load(path).cluster == "ORG/UK/EDIN"
    ok(capsys, "keys", "add", "--scheme", "blake2b", "-k", path)
    assert Keyring.load(path).cluster == "ORG/UK/EDIN"
    assert "cluster ORG/UK/EDIN" in ok(capsys, "keys", "list", "-k", path)
    assert json.loads(ok(capsys, "keys", "list", "--json", "-k", path))["cluster"] == "ORG/UK/EDIN"


def test_new_ed25519_needs_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "n1.keys"
    assert "pass --node NAME" in fails(capsys, "keys", "new", "--scheme", "ed25519", path)
    assert not path.exists()
    out = ok(capsys, "keys", "new", "--scheme", "ed25519", "--node", "n1", "--id", "n1-ed", path)
    assert "export-public" in out
    keyring = Keyring.load(path)
    assert keyring.node == "n1"
    assert keyring.signing_key_id == "n1-ed"


def test_new_refuses_to_overwrite_without_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "first", path)
    assert "pass --force" in fails(capsys, "keys", "new", "--scheme", "blake2b", path)
    assert list(Keyring.load(path).keys) == ["first"]
    ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "second", "--force", path)
    assert list(Keyring.load(path).keys) == ["second"]
    assert sorted(os.listdir(tmp_path)) == ["node.keys"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "none"], "'none' scheme uses no key"),
        (["--scheme", "rot13"], "unknown authentication scheme 'rot13'; installed:"),
        (["--scheme", "hmac-sha256", "--id", "bad id"], "must be 1-64 characters"),
        (["--scheme", "ed25519", "--node", "bad\tnode"], "printable"),
    ],
)
def test_new_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "node.keys"
    assert message in fails(capsys, "keys", "new", *args, path)
    assert not path.exists()


def test_new_into_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "missing" / "node.keys"
    assert "cannot write keyring" in fails(capsys, "keys", "new", "--scheme", "blake2b", path)


# -- add, use, remove ----------------------------------------------------------------------------


def test_add_use_remove(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "old", path)
    out = ok(capsys, "keys", "add", "--scheme", "hmac-sha256", "--id", "new", "-k", path)
    assert "accepted, not signing" in out
    assert Keyring.load(path).signing_key_id == "old"
    assert list(Keyring.load(path).keys) == ["old", "new"]

    assert "is the signing key" in fails(capsys, "keys", "remove", "old", "-k", path)
    ok(capsys, "keys", "use", "new", "-k", path)
    assert Keyring.load(path).signing_key_id == "new"
    ok(capsys, "keys", "remove", "old", "-k", path)
    assert list(Keyring.load(path).keys) == ["new"]
    assert path.stat().st_mode & 0o777 == 0o600

    assert "no key 'old'" in fails(capsys, "keys", "remove", "old", "-k", path)
    assert "no key 'gone'" in fails(capsys, "keys", "use", "gone", "-k", path)
    assert "already has a different key 'new'" in fails(
        capsys, "keys", "add", "--scheme", "blake2b", "--id", "new", "-k", path
    )


def test_add_with_sign(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", path)
    ok(capsys, "keys", "add", "--scheme", "secretbox", "--id", "box", "--sign", "-k", path)
    assert Keyring.load(path).signing_key().scheme == "secretbox"


def test_add_ed25519_sets_the_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", path)
    assert "pass --node NAME" in fails(capsys, "keys", "add", "--scheme", "ed25519", "-k", path)
    ok(capsys, "keys", "add", "--scheme", "ed25519", "--node", "n1", "--id", "n1-ed", "-k", path)
    assert Keyring.load(path).node == "n1"
    assert "belongs to node 'n1', not 'n2'" in fails(
        capsys, "keys", "add", "--scheme", "ed25519", "--node", "n2", "-k", path
    )
    ok(capsys, "keys", "add", "--scheme", "ed25519", "--id", "n1-ed-2", "-k", path)


def test_commands_need_an_existing_private_keyring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "node.keys"
    assert "does not exist" in fails(capsys, "keys", "list", "-k", path)
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", path)
    path.chmod(0o644)
    err = fails(capsys, "keys", "add", "--scheme", "blake2b", "-k", path)
    assert f"chmod 600 {path}" in err


# -- the keyring path ----------------------------------------------------------------------------


def test_keyring_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.keys"
    ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "from-env", path)
    monkeypatch.setenv(ENV_KEYRING, str(path))
    assert "from-env" in ok(capsys, "keys", "list")
    other = tmp_path / "other.keys"
    ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "from-option", other)
    out = ok(capsys, "keys", "list", "-k", other)  # -k wins over the environment
    assert "from-option" in out
    assert "from-env" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["add", "--scheme", "blake2b"],
        ["import", "x.keys"],
        ["use", "k"],
        ["remove", "k"],
        ["untrust", "n2", "k"],
        ["export-public"],
        ["http-credentials"],
    ],
)
def test_no_keyring_is_a_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert "pass -k FILE or set CLUSTERRPC_KEYRING" in fails(capsys, "keys", *argv)


def test_argument_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["keys"], ["keys", "bogus"], ["keys", "new", "x.keys"], ["keys", "use"]):
        status, _, err = run(capsys, *argv)
        assert status == 2
        assert "clusterrpc: error:" in err


# -- list ----------------------------------------------------------------------------------------


def make_full_keyring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """n1's keyring with a shared key (signing), an own ed25519 key, and n2's public key."""
    n1, n2 = tmp_path / "n1.keys", tmp_path / "n2.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "hm", n1)
    ok(capsys, "keys", "add", "--scheme", "ed25519", "--node", "n1", "--id", "n1-ed", "-k", n1)
    ok(capsys, "keys", "new", "--scheme", "ed25519", "--node", "n2", "--id", "n2-ed", n2)
    ok(capsys, "keys", "export-public", "-k", n2, "-o", tmp_path / "n2.pub")
    ok(capsys, "keys", "import", "-k", n1, tmp_path / "n2.pub")
    return n1


def test_list_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = make_full_keyring(capsys, tmp_path)
    keyring = Keyring.load(path)
    out = ok(capsys, "keys", "list", "-k", path)
    lines = out.splitlines()
    assert lines[0] == f"keyring {path}, node n1"
    hm = next(line for line in lines if line.startswith("hm "))
    assert hm.split() == ["hm", "hmac-sha256", "yes", "-"]
    ed = next(line for line in lines if line.startswith("n1-ed "))
    ed_public = keyring.keys["n1-ed"].public
    assert ed_public is not None
    assert ed.split() == ["n1-ed", "ed25519", fingerprint(ed_public)]
    trusted = next(line for line in lines if line.startswith("n2 "))
    n2_public = keyring.trusted[("n2", "n2-ed")].public
    assert trusted.split() == ["n2", "n2-ed", "ed25519", fingerprint(n2_public)]
    for form in secrets_of(keyring):
        assert form not in out


def test_list_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = make_full_keyring(capsys, tmp_path)
    keyring = Keyring.load(path)
    out = ok(capsys, "keys", "list", "--json", "-k", path)
    info = json.loads(out)
    n1_public = keyring.keys["n1-ed"].public
    assert n1_public is not None
    assert info == {
        "keyring": str(path),
        "node": "n1",
        "cluster": None,
        "signing": "hm",
        "keys": [
            {"id": "hm", "scheme": "hmac-sha256", "signing": True, "fingerprint": None},
            {"id": "n1-ed", "scheme": "ed25519", "signing": False,
             "fingerprint": fingerprint(n1_public)},
        ],
        "trusted": [
            {"node": "n2", "id": "n2-ed", "scheme": "ed25519",
             "fingerprint": fingerprint(keyring.trusted[("n2", "n2-ed")].public)},
        ],
    }
    for form in secrets_of(keyring):
        assert form not in out


def test_list_of_public_only_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    make_full_keyring(capsys, tmp_path)
    out = ok(capsys, "keys", "list", "-k", tmp_path / "n2.pub")
    assert "no keys of its own" in out
    assert "n2-ed" in out


# -- import, export-public, untrust --------------------------------------------------------------


def test_export_public(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = make_full_keyring(capsys, tmp_path)
    keyring = Keyring.load(path)
    out = ok(capsys, "keys", "export-public", "-k", path)
    exported = Keyring.from_toml(out)
    assert exported == Keyring(trusted=keyring.public_entries())
    assert exported.node is None
    assert exported.signing_key_id is None
    assert not exported.keys
    for form in secrets_of(keyring):
        assert form not in out

    pub = tmp_path / "n1.pub"
    assert "wrote 1 public key(s)" in ok(capsys, "keys", "export-public", "-k", path, "-o", pub)
    assert Keyring.load(pub) == exported


def test_export_public_without_public_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "node.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", path)
    assert "no public keys to export" in fails(capsys, "keys", "export-public", "-k", path)


def test_ed25519_trust_across_nodes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    nodes = ["n1", "n2", "n3"]
    for node in nodes:
        path = tmp_path / f"{node}.keys"
        ok(capsys, "keys", "new", "--scheme", "ed25519", "--node", node, "--id", f"{node}-ed",
           path)
        ok(capsys, "keys", "export-public", "-k", path, "-o", tmp_path / f"{node}.pub")
    for node in nodes:
        for other in nodes:
            if other != node:
                ok(capsys, "keys", "import", "-k", tmp_path / f"{node}.keys",
                   tmp_path / f"{other}.pub")
    keyrings = {node: Keyring.load(tmp_path / f"{node}.keys") for node in nodes}

    scheme = get_scheme("ed25519")
    packet = scheme.sealer(keyrings["n1"].signing_key().secret).seal(b"hdr", b"vote")
    for receiver in ("n2", "n3"):
        public = keyrings[receiver].verification_key("ed25519", "n1-ed", "n1")
        assert scheme.opener(public).open(packet, 3, 7) == b"vote"
    # n2 cannot present n1's key id as itself, nor its own key id as n1
    with pytest.raises(UnknownKeyError):
        keyrings["n3"].verification_key("ed25519", "n1-ed", "n2")
    with pytest.raises(UnknownKeyError):
        keyrings["n3"].verification_key("ed25519", "n2-ed", "n1")

    ok(capsys, "keys", "untrust", "n1", "n1-ed", "-k", tmp_path / "n2.keys")
    with pytest.raises(UnknownSenderError):
        Keyring.load(tmp_path / "n2.keys").verification_key("ed25519", "n1-ed", "n1")
    assert "no key 'n1-ed' is trusted for node 'n1'" in fails(
        capsys, "keys", "untrust", "n1", "n1-ed", "-k", tmp_path / "n2.keys"
    )


def test_import_refuses_another_nodes_private_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    n1 = make_full_keyring(capsys, tmp_path)
    n3 = tmp_path / "n3.keys"
    ok(capsys, "keys", "new", "--scheme", "blake2b", n3)
    err = fails(capsys, "keys", "import", "-k", n3, n1)
    assert "private ed25519 key of node 'n1'" in err
    assert "n1-ed" not in Keyring.load(n3).keys
    # naming only the shared key works
    ok(capsys, "keys", "import", "-k", n3, n1, "hm")
    assert "hm" in Keyring.load(n3).keys
    assert "n1-ed" not in Keyring.load(n3).keys


def test_import_selected_ids_and_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = tmp_path / "source.keys", tmp_path / "target.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "a", source)
    ok(capsys, "keys", "add", "--scheme", "blake2b", "--id", "b", "-k", source)
    ok(capsys, "keys", "new", "--scheme", "secretbox", "--id", "mine", target)
    assert "has no key 'zzz'" in fails(capsys, "keys", "import", "-k", target, source, "b", "zzz")
    out = ok(capsys, "keys", "import", "-k", target, source, "b")
    assert "imported 1 new key(s)" in out
    keyring = Keyring.load(target)
    assert list(keyring.keys) == ["mine", "b"]
    assert keyring.signing_key_id == "mine"  # importing never changes the signing key
    assert "imported 0 new key(s)" in ok(capsys, "keys", "import", "-k", target, source, "b")
    # a different key under an existing id is never silently replaced
    ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "b", "--force", source)
    assert "already has a different key 'b'" in fails(
        capsys, "keys", "import", "-k", target, source
    )
    assert Keyring.load(target) == keyring
    assert "does not exist" in fails(capsys, "keys", "import", "-k", target, tmp_path / "nope")


def test_rotation_across_two_nodes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """spec/keyring.md, "Rotation": at every step each node verifies what the other signs."""
    cluster, new = tmp_path / "cluster.keys", tmp_path / "new.keys"
    n1, n2 = tmp_path / "n1.keys", tmp_path / "n2.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "old", cluster)
    for node in (n1, n2):
        ok(capsys, "keys", "new", "--scheme", "blake2b", "--id", "boot", node)
        ok(capsys, "keys", "import", "-k", node, cluster)
        ok(capsys, "keys", "use", "old", "-k", node)
        ok(capsys, "keys", "remove", "boot", "-k", node)

    def check_both_ways() -> None:
        one, two = Keyring.load(n1), Keyring.load(n2)
        for sender, receiver, name in ((one, two, "n1"), (two, one, "n2")):
            key = sender.signing_key()
            assert receiver.verification_key(key.scheme, key.key_id, name) == key.secret

    check_both_ways()
    # 1. install the new key everywhere, accepted, not signing
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "next", new)
    for node in (n1, n2):
        ok(capsys, "keys", "import", "-k", node, new)
        assert Keyring.load(node).signing_key_id == "old"
    check_both_ways()
    # 2. switch the signing key, one node at a time
    ok(capsys, "keys", "use", "next", "-k", n1)
    check_both_ways()  # n1 signs with next, n2 with old: both still verify
    ok(capsys, "keys", "use", "next", "-k", n2)
    check_both_ways()
    # 3. remove the old key
    for node in (n1, n2):
        ok(capsys, "keys", "remove", "old", "-k", node)
    check_both_ways()
    with pytest.raises(UnknownKeyError):
        Keyring.load(n2).verification_key("hmac-sha256", "old", "n1")
    assert sorted(os.listdir(tmp_path)) == ["cluster.keys", "n1.keys", "n2.keys", "new.keys"]


# -- the installed command -----------------------------------------------------------------------


def test_real_command_creates_a_keyring(tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    env = {name: value for name, value in os.environ.items() if name != ENV_KEYRING}
    result = subprocess.run(
        [sys.executable, "-m", "clusterrpc", "keys", "new", "--scheme", "hmac-sha256", str(path)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "signs" in result.stdout
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path).signing_key().scheme == "hmac-sha256"
    again = subprocess.run(
        [sys.executable, "-m", "clusterrpc", "keys", "new", "--scheme", "hmac-sha256", str(path)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert again.returncode == 2
    assert again.stderr.startswith("clusterrpc: error: ")


# -- http-credentials ----------------------------------------------------------------------------


def two_key_keyring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A keyring whose key k1 signs and whose key k2 is only accepted."""
    path = tmp_path / "cluster.keys"
    ok(capsys, "keys", "new", "--scheme", "hmac-sha256", "--id", "k1", "--cluster", "C", path)
    ok(capsys, "keys", "add", "--scheme", "blake2b", "--id", "k2", "-k", path)
    return path


def test_http_credentials_of_the_signing_key(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    path = two_key_keyring(capsys, tmp_path)
    keyring = Keyring.load(path)
    status, out, err = run(capsys, "keys", "http-credentials", "-k", path)
    assert status == 0
    assert out == f"user: k1\ntoken: {http_token(keyring.keys['k1'])}\n"
    # The token is a secret, and the command says so, on standard error only.
    assert err.startswith("clusterrpc: warning: the token is a secret")
    assert "clear text" in err
    assert err.count("\n") == 1
    for secret in secrets_of(keyring):
        assert secret not in out + err


def test_http_credentials_of_another_key(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    path = two_key_keyring(capsys, tmp_path)
    status, out, _ = run(capsys, "keys", "http-credentials", "-k", path, "--key", "k2")
    assert status == 0
    assert out == f"user: k2\ntoken: {http_token(Keyring.load(path).keys['k2'])}\n"


def test_http_credentials_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = two_key_keyring(capsys, tmp_path)
    token = http_token(Keyring.load(path).keys["k1"])
    cases = {
        "http://127.0.0.1:7400/": f"http://k1:{token}@127.0.0.1:7400/",
        "http://127.0.0.1:7400": f"http://k1:{token}@127.0.0.1:7400/RPC2",  # as the node reads it
        "https://[::1]:7443/x/y": f"https://k1:{token}@[::1]:7443/x/y",
        "https://node-1.example": f"https://k1:{token}@node-1.example:443/RPC2",
    }
    for url, expected in cases.items():
        status, out, err = run(capsys, "keys", "http-credentials", "-k", path, "--url", url)
        assert (status, out) == (0, expected + "\n"), err
        assert "the token is a secret" in err
        assert ("clear text" in err) == url.startswith("http:")


def test_url_with_credentials_percent_encodes_the_userinfo() -> None:
    # Key ids and tokens are URL-safe today; the URL must stay right for any user name.
    url = url_with_credentials("http://127.0.0.1:7400/RPC2", "a b:c/@%é", "t:@/")
    assert url == "http://a%20b%3Ac%2F%40%25%C3%A9:t%3A%40%2F@127.0.0.1:7400/RPC2"
    parts = urllib.parse.urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 7400, "/RPC2")
    assert urllib.parse.unquote(parts.username or "") == "a b:c/@%é"
    assert urllib.parse.unquote(parts.password or "") == "t:@/"


def test_url_with_credentials_refuses_what_is_not_a_node_http_address() -> None:
    for url, message in [
        ("tcp://127.0.0.1:7400", "not an HTTP address"),
        ("udp://127.0.0.1:7400", "not an HTTP address"),
        ("http://k1:x@127.0.0.1:7400/", "already holds credentials"),
        ("http://127.0.0.1:0/", "port 0"),
        ("127.0.0.1:7400", "invalid address"),
        ("http://", "invalid address"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            url_with_credentials(url, "k1", "t")


def test_http_credentials_errors_exit_2(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    path = two_key_keyring(capsys, tmp_path)
    assert "does not exist" in fails(capsys, "keys", "http-credentials", "-k",
                                     tmp_path / "missing.keys")
    err = fails(capsys, "keys", "http-credentials", "-k", path, "--key", "nope")
    assert "has no key 'nope' (its keys: k1, k2)" in err
    assert "not an HTTP address" in fails(capsys, "keys", "http-credentials", "-k", path,
                                          "--url", "tcp://127.0.0.1:7400")
    assert "invalid address" in fails(capsys, "keys", "http-credentials", "-k", path,
                                      "--url", "nonsense")
    # A file of trusted public keys only has no key to derive a token from.
    ok(capsys, "keys", "new", "--scheme", "ed25519", "--node", "n1", tmp_path / "n1.keys")
    ok(capsys, "keys", "export-public", "-k", tmp_path / "n1.keys", "-o", tmp_path / "pub.keys")
    assert "no keys" in fails(capsys, "keys", "http-credentials", "-k", tmp_path / "pub.keys")
    path.chmod(0o644)
    assert f"chmod 600 {path}" in fails(capsys, "keys", "http-credentials", "-k", path)


# -- http-credentials end to end: a real node, the real command, foreign clients ----------------


class Arithmetic:
    @remote
    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @remote
    def whoami(self) -> str:
        """The key id the caller authenticated with."""
        return current_call().key_id or ""


@pytest.fixture
def http_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A node serving ``math.*`` on ``http://127.0.0.1:0/RPC2`` (loopback only) with the keys
    of :func:`two_key_keyring`; yields (keyring path, the node's bound HTTP URL)."""
    path = two_key_keyring(capsys, tmp_path)
    node = Node("n1", cluster="C", keyring=Keyring.load(path),
                listen=["http://127.0.0.1:0/RPC2"])
    node.serve(Arithmetic(), name="math")
    loop = LoopThread(name="test-keys-loop", wait=WAIT)
    try:
        loop.run(node.start())
        try:
            (url,) = node.addresses
            assert url.startswith("http://127.0.0.1:"), url
            assert url.endswith("/RPC2"), url
            yield path, url
        finally:
            loop.run(node.stop())
    finally:
        loop.stop()


def http_credentials_command(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real ``clusterrpc keys http-credentials ARGV`` in a new process."""
    env = {name: value for name, value in os.environ.items() if name != ENV_KEYRING}
    return subprocess.run(
        [sys.executable, "-m", "clusterrpc", "keys", "http-credentials", *map(str, argv)],
        capture_output=True, text=True, timeout=WAIT, env=env, check=False,
    )


CALL_BODY = (
    b'<?xml version="1.0"?><methodCall><methodName>math.add</methodName><params>'
    b"<param><value><int>40</int></value></param><param><value><int>2</int></value></param>"
    b"</params></methodCall>"
)


def curl(*argv: str) -> tuple[Any, ...]:
    """POST :data:`CALL_BODY` with curl; the XML-RPC answer's parameters."""
    executable = shutil.which("curl")
    assert executable is not None
    result = subprocess.run(
        [executable, "--silent", "--show-error", "--fail", "--max-time", str(WAIT),
         "--header", "Content-Type: text/xml", "--data-binary", "@-", *argv],
        input=CALL_BODY, capture_output=True, timeout=WAIT, check=False,
    )
    assert result.returncode == 0, result.stderr
    params, method = xmlrpc.client.loads(result.stdout)
    assert method is None
    return params


def test_http_credentials_url_calls_a_node_with_xmlrpc_client(
    http_node: tuple[Path, str],
) -> None:
    path, node_url = http_node
    result = http_credentials_command("-k", path, "--url", node_url)
    assert result.returncode == 0, result.stderr
    assert "the token is a secret" in result.stderr
    url = result.stdout.strip()
    assert result.stdout == url + "\n"
    with xmlrpc.client.ServerProxy(url) as proxy:
        assert proxy.math.add(40, 2) == 42
        assert proxy.math.whoami() == "k1"
    with xmlrpc.client.ServerProxy(node_url) as anonymous, pytest.raises(
        xmlrpc.client.ProtocolError
    ) as refused:
        anonymous.math.add(1, 2)
    assert refused.value.errcode == 401
    # Another key of the node's keyring works as well (keys rotate).
    other = http_credentials_command("-k", path, "--key", "k2", "--url", node_url)
    assert other.returncode == 0, other.stderr
    with xmlrpc.client.ServerProxy(other.stdout.strip()) as proxy:
        assert proxy.math.whoami() == "k2"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_http_credentials_let_curl_call_a_node(http_node: tuple[Path, str]) -> None:
    path, node_url = http_node
    with_url = http_credentials_command("-k", path, "--url", node_url)
    assert with_url.returncode == 0, with_url.stderr
    assert curl(with_url.stdout.strip()) == (42,)
    # The user and token lines, as curl --user takes them.
    lines = http_credentials_command("-k", path)
    assert lines.returncode == 0, lines.stderr
    fields = dict(line.split(": ", 1) for line in lines.stdout.splitlines())
    assert sorted(fields) == ["token", "user"]
    assert curl("--user", f"{fields['user']}:{fields['token']}", node_url) == (42,)
