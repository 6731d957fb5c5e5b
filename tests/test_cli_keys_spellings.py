"""``clusterrpc keys``: every subcommand takes its keyring the same ways — FILE, ``-k FILE``,
``--keyring FILE``, FILE and ``-k`` naming the same file, ``$CLUSTERRPC_KEYRING``, ``keyring``
in the client configuration file — and refuses FILE and ``-k`` naming different files (exit 2);
``keys import``'s operands ``[FILE] SOURCE [KEYID ...]`` and their one ambiguity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.defaults import ENV_CONFIG, ENV_KEYRING
from clusterrpc.cli.exits import EXIT_OK, EXIT_USAGE
from clusterrpc.keyring import Keyring
from tests.conftest import scaled
from tests.test_cli_rpc import run

pytestmark = pytest.mark.timeout(scaled(60.0))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEYRING, raising=False)
    monkeypatch.setenv(ENV_CONFIG, "")


def make_keyring(path: Path) -> Path:
    """n1's keyring: shared keys k1 (signing) and k2, its own ed25519 key, n2's public key."""
    n2 = Keyring.generate("ed25519", key_id="n2-ed")
    (trusted,) = Keyring(node="n2", keys=[n2], signing_key_id="n2-ed").public_entries()
    keys = [Keyring.generate("hmac-sha256", key_id="k1"),
            Keyring.generate("hmac-sha256", key_id="k2"),
            Keyring.generate("ed25519", key_id="n1-ed")]
    Keyring(node="n1", cluster="ORG/UK/EDIN", keys=keys, trusted=[trusted],
            signing_key_id="k1").save(path)
    return path


def make_source(path: Path) -> Path:
    Keyring(keys=[Keyring.generate("blake2b", key_id="imported")],
            signing_key_id="imported").save(path)
    return path


# Each subcommand: the options before FILE, the operands after it.
SUBCOMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "new": (["--scheme", "blake2b", "--id", "fresh"], []),
    "add": (["--scheme", "blake2b", "--id", "added"], []),
    "import": ([], ["{source}"]),
    "use": ([], ["k2"]),
    "remove": ([], ["k2"]),
    "untrust": ([], ["n2", "n2-ed"]),
    "list": ([], []),
    "export-public": ([], []),
    "http-credentials": ([], []),
}

SPELLINGS = ("FILE", "-k", "--keyring", "FILE and -k", "environment", "configuration file")


def prepare(tmp_path: Path, subcommand: str) -> tuple[Path, Path]:
    """The keyring to work on (not created for ``new``) and the import source."""
    path = tmp_path / "n1.keys"
    if subcommand != "new":
        make_keyring(path)
    return path, make_source(tmp_path / "source.keys")


def argv_for(subcommand: str, spelling: str, path: Path, source: Path
             ) -> tuple[list[str], dict[str, str]]:
    before, after = SUBCOMMANDS[subcommand]
    after = [arg.format(source=source) for arg in after]
    env: dict[str, str] = {}
    if spelling == "FILE":
        middle = [str(path)]
    elif spelling in ("-k", "--keyring"):
        middle = [spelling, str(path)]
    elif spelling == "FILE and -k":
        middle = ["-k", str(path), str(path)]
    elif spelling == "environment":
        middle = []
        env[ENV_KEYRING] = str(path)
    else:
        config = path.parent / "conf" / "client.toml"
        config.parent.mkdir(exist_ok=True)
        config.write_text(f'keyring = "../{path.name}"\n')  # relative to the file
        middle = []
        env[ENV_CONFIG] = str(config)
    return ["keys", subcommand, "--json", *before, *middle, *after], env


def check_effect(subcommand: str, path: Path, document: dict[str, Any]) -> None:
    keyring = Keyring.load(path)
    if subcommand == "new":
        assert list(keyring.keys) == ["fresh"]
    elif subcommand == "add":
        assert "added" in keyring.keys
    elif subcommand == "import":
        assert "imported" in keyring.keys
    elif subcommand == "use":
        assert keyring.signing_key_id == "k2"
    elif subcommand == "remove":
        assert "k2" not in keyring.keys
    elif subcommand == "untrust":
        assert not keyring.trusted
    elif subcommand == "export-public":
        assert [entry["id"] for entry in document["public_keys"]] == ["n1-ed"]
    elif subcommand == "http-credentials":
        assert document["user"] == "k1"


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("subcommand", sorted(SUBCOMMANDS))
def test_every_subcommand_takes_the_keyring_every_way(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    subcommand: str, spelling: str,
) -> None:
    path, source = prepare(tmp_path, subcommand)
    argv, env = argv_for(subcommand, spelling, path, source)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, out, err = run(capsys, *argv)
    assert status == EXIT_OK, err
    document = json.loads(out)
    assert Path(document["keyring"]).resolve() == path.resolve()
    check_effect(subcommand, path, document)


@pytest.mark.parametrize("subcommand", sorted(set(SUBCOMMANDS) - {"import"}))
def test_file_and_option_naming_different_files_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, subcommand: str,
) -> None:
    path, _source = prepare(tmp_path, subcommand)
    other = make_keyring(tmp_path / "other.keys")
    before_bytes = path.read_bytes() if path.exists() else None
    before, after = SUBCOMMANDS[subcommand]
    status, out, err = run(capsys, "keys", subcommand, *before, "-k", other, path, *after)
    assert (status, out) == (EXIT_USAGE, "")
    assert err == (f"clusterrpc: error: the keyring is given twice, as FILE {path} and as "
                   f"-k {other}: give one of them\n")
    assert (path.read_bytes() if path.exists() else None) == before_bytes


def test_option_order_does_not_matter(capsys: pytest.CaptureFixture[str], tmp_path: Path
                                      ) -> None:
    path = make_keyring(tmp_path / "n1.keys")
    argvs: list[list[str | Path]] = [
        ["use", "k2", "-k", path], ["use", "-k", path, "k2"], ["use", path, "k2"],
        ["use", "--json", path, "k1"], ["remove", "k2", "--keyring", path]]
    for argv in argvs:
        status, _, err = run(capsys, "keys", *argv)
        assert status == EXIT_OK, (argv, err)
    assert list(Keyring.load(path).keys) == ["k1", "n1-ed"]


def test_import_operands(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_keyring(tmp_path / "n1.keys")
    source = make_source(tmp_path / "source.keys")
    two = Keyring(keys=[Keyring.generate("blake2b", key_id="a"),
                        Keyring.generate("blake2b", key_id="b")], signing_key_id="a")
    two.save(tmp_path / "two.keys")
    # With -k: SOURCE [KEYID ...]
    assert run(capsys, "keys", "import", "-k", path, tmp_path / "two.keys", "a")[0] == EXIT_OK
    assert "a" in Keyring.load(path).keys
    assert "b" not in Keyring.load(path).keys
    # Without: FILE SOURCE [KEYID ...]
    assert run(capsys, "keys", "import", path, tmp_path / "two.keys", "b")[0] == EXIT_OK
    assert "b" in Keyring.load(path).keys
    # One operand: SOURCE, into the default keyring.
    monkeypatch.setenv(ENV_KEYRING, str(path))
    assert run(capsys, "keys", "import", source)[0] == EXIT_OK
    assert "imported" in Keyring.load(path).keys
    # The default keyring given again as FILE: fine.
    assert run(capsys, "keys", "import", path, source)[0] == EXIT_OK
    # Two operands, the first not the default keyring: FILE SOURCE or SOURCE KEYID? Refused.
    before = path.read_bytes()
    status, out, err = run(capsys, "keys", "import", tmp_path / "two.keys", "a")
    assert (status, out) == (EXIT_USAGE, "")
    assert "say which with -k FILE" in err
    assert f"defaults to {path} (from ${ENV_KEYRING})" in err
    assert path.read_bytes() == before
    assert err.count("\n") == 1


def test_help_shows_both_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    for subcommand in SUBCOMMANDS:
        status, out, _ = run(capsys, "keys", subcommand, "--help")
        assert status == 0
        assert "-k FILE" in out, subcommand
        assert "[FILE]" in out, subcommand
        assert "--json" in out, subcommand
