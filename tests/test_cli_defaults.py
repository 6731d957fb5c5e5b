"""The client defaults (:mod:`clusterrpc.cli.defaults`): where the configuration file is looked
for, what it may hold, precedence option > environment > file > built-in default for the
keyring, timeout, codec and cluster, paths relative to the file, and an invalid file as a usage
error (exit 2) naming the file and the key — in process and through the real command."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterrpc.cli.defaults import (
    DEFAULT_CODEC,
    DEFAULT_TIMEOUT,
    ENV_CONFIG,
    ENV_KEYRING,
    ClientDefaults,
    config_path,
    load_defaults,
)
from clusterrpc.cli.exits import EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, UsageError
from clusterrpc.keyring import Keyring
from tests.conftest import scaled
from tests.test_cli_rpc import child_env, run, run_cli

pytestmark = pytest.mark.timeout(scaled(60.0))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_KEYRING, raising=False)
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # empty: no file
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def keyring_file(path: Path, key_id: str, cluster: str | None = "ORG/UK/EDIN") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Keyring.generate("hmac-sha256", key_id=key_id)
    Keyring(cluster=cluster, keys=[key], signing_key_id=key_id).save(path)
    return path


def client_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def silent_udp() -> Iterator[str]:
    """A bound UDP port on 127.0.0.1 that never answers: calls to it time out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"udp://127.0.0.1:{sock.getsockname()[1]}"


# -- where the file is -----------------------------------------------------------------------------


def test_config_path_order(tmp_path: Path) -> None:
    assert config_path({ENV_CONFIG: "/etc/c.toml", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == (
        Path("/etc/c.toml"), True)
    assert config_path({ENV_CONFIG: "", "XDG_CONFIG_HOME": "/x"}) == (None, False)
    assert config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == (
        Path("/x/clusterrpc/client.toml"), False)
    # A relative $XDG_CONFIG_HOME is invalid (XDG Base Directory spec): ignored.
    assert config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == (
        Path("/h/.config/clusterrpc/client.toml"), False)
    assert config_path({"HOME": "/h"}) == (Path("/h/.config/clusterrpc/client.toml"), False)


def test_no_file_gives_the_built_in_defaults(tmp_path: Path) -> None:
    defaults = load_defaults({"HOME": str(tmp_path)})
    assert defaults == ClientDefaults()
    assert defaults.timeout_or_default(None) == DEFAULT_TIMEOUT
    assert defaults.codec_or_default(None) == DEFAULT_CODEC
    assert defaults.keyring_path(None, {}) == (None, "")
    assert defaults.cluster_or(None, "FROM/KEYRING") == "FROM/KEYRING"


def test_file_under_xdg_and_home(tmp_path: Path) -> None:
    xdg = client_toml(tmp_path / "xdg" / "clusterrpc" / "client.toml", "timeout = 3\n")
    home = client_toml(tmp_path / "home" / ".config" / "clusterrpc" / "client.toml",
                       "timeout = 4\n")
    assert load_defaults({"XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                          "HOME": str(tmp_path / "home")}) == ClientDefaults(path=xdg,
                                                                            timeout=3.0)
    assert load_defaults({"HOME": str(tmp_path / "home")}).path == home


def test_file_settings_and_relative_keyring(tmp_path: Path) -> None:
    path = client_toml(tmp_path / "conf" / "client.toml",
                       'keyring = "keys/n1.keys"\ntimeout = 2\ncodec = "compact"\n'
                       'cluster = "LAB"\n')
    defaults = load_defaults({ENV_CONFIG: str(path)})
    assert defaults == ClientDefaults(path=path, keyring=str(tmp_path / "conf" / "keys" /
                                                             "n1.keys"),
                                      timeout=2.0, codec="compact", cluster="LAB")
    # Precedence: option > environment > file (keyring); option > file (the others).
    assert defaults.keyring_path("opt.keys", {ENV_KEYRING: "env.keys"}) == ("opt.keys", "-k")
    assert defaults.keyring_path(None, {ENV_KEYRING: "env.keys"}) == (
        "env.keys", f"${ENV_KEYRING}")
    assert defaults.keyring_path(None, {ENV_KEYRING: ""}) == (defaults.keyring, str(path))
    assert defaults.timeout_or_default(7.0) == 7.0
    assert defaults.timeout_or_default(None) == 2.0
    assert defaults.codec_or_default("json") == "json"
    assert defaults.codec_or_default(None) == "compact"
    assert defaults.cluster_or("OPT", "KEYRING") == "OPT"
    assert defaults.cluster_or(None, "KEYRING") == "LAB"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeout = ", "not valid TOML"),
        ("colour = 1\n", "unknown key `colour`"),
        ('keyring = ""\n', "`keyring` must be a file name"),
        ("keyring = 3\n", "`keyring` must be a file name"),
        ('timeout = "soon"\n', "`timeout` must be a positive number of seconds"),
        ("timeout = 0\n", "`timeout` must be a positive number of seconds"),
        ("timeout = true\n", "`timeout` must be a positive number of seconds"),
        ("codec = true\n", "`codec` must be a codec name or wire id"),
        ('codec = "no-such-codec"\n', "`codec` 'no-such-codec' is not an installed codec"),
        ("codec = 250\n", "`codec` 250 is not an installed codec"),
        ('cluster = ""\n', "`cluster` must be a non-empty string"),
    ],
)
def test_invalid_file(tmp_path: Path, text: str, message: str) -> None:
    path = client_toml(tmp_path / "client.toml", text)
    with pytest.raises(UsageError) as raised:
        load_defaults({ENV_CONFIG: str(path)})
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot read the client configuration .*missing"):
        load_defaults({ENV_CONFIG: str(tmp_path / "missing.toml")})


# -- through the commands --------------------------------------------------------------------------


def signing_key(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = run(capsys, "keys", "list", "--json", *argv)
    assert (status, err) == (EXIT_OK, ""), err
    key: str = json.loads(out)["signing"]
    return key


def test_keyring_precedence_flag_env_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    keyring_file(tmp_path / "conf" / "file.keys", "from-file")
    env = keyring_file(tmp_path / "env.keys", "from-env")
    flag = keyring_file(tmp_path / "flag.keys", "from-flag")
    config = client_toml(tmp_path / "conf" / "client.toml", 'keyring = "file.keys"\n')
    monkeypatch.setenv(ENV_CONFIG, str(config))
    monkeypatch.chdir(tmp_path)  # the file's relative path is not relative to here
    assert signing_key(capsys) == "from-file"
    monkeypatch.setenv(ENV_KEYRING, str(env))
    assert signing_key(capsys) == "from-env"
    assert signing_key(capsys, "-k", str(flag)) == "from-flag"
    assert signing_key(capsys, str(flag)) == "from-flag"


def test_file_under_xdg_config_home_is_found(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    keyring_file(tmp_path / "xdg" / "clusterrpc" / "x.keys", "from-xdg")
    client_toml(tmp_path / "xdg" / "clusterrpc" / "client.toml", 'keyring = "x.keys"\n')
    assert signing_key(capsys) == "from-xdg"


@pytest.mark.parametrize("argv", [
    ["keys", "list"],
    ["call", "udp://127.0.0.1:9", "x.y"],
    ["methods", "udp://127.0.0.1:9"],
    ["members", "udp://127.0.0.1:9"],
    ["leader", "udp://127.0.0.1:9"],
    ["status", "udp://127.0.0.1:9"],
])
def test_invalid_file_is_a_usage_error_in_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    config = client_toml(tmp_path / "client.toml", 'timeout = "soon"\n')
    monkeypatch.setenv(ENV_CONFIG, str(config))
    status, out, err = run(capsys, *argv)
    assert (status, out) == (EXIT_USAGE, "")
    assert err == (f"clusterrpc: error: {config}: `timeout` must be a positive number of "
                   "seconds, not 'soon'\n")


def test_timeout_from_the_file_and_the_option(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              silent_udp: str) -> None:
    keyring_file(tmp_path / "n.keys", "k1")
    config = client_toml(tmp_path / "client.toml", 'keyring = "n.keys"\ntimeout = 0.2\n')
    monkeypatch.setenv(ENV_CONFIG, str(config))
    status, _, err = run(capsys, "call", silent_udp, "svc.m")
    assert status == EXIT_TIMEOUT
    assert "0.2 s" in err
    status, _, err = run(capsys, "status", silent_udp, "--timeout", "0.3")
    assert status == EXIT_TIMEOUT
    assert "0.3 s" in err


def test_cluster_from_the_file_wins_over_the_keyring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    silent_udp: str,
) -> None:
    keyring_file(tmp_path / "n.keys", "k1", cluster=None)
    monkeypatch.setenv(ENV_KEYRING, str(tmp_path / "n.keys"))
    status, _, err = run(capsys, "call", silent_udp, "svc.m", "--timeout", "0.2")
    assert status == EXIT_USAGE
    assert "no cluster name" in err
    config = client_toml(tmp_path / "client.toml", 'cluster = "LAB"\ntimeout = 0.2\n')
    monkeypatch.setenv(ENV_CONFIG, str(config))
    status, _, err = run(capsys, "call", silent_udp, "svc.m")
    assert status == EXIT_TIMEOUT, err


def test_insecure_with_a_keyring_from_the_file_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyring_file(tmp_path / "n.keys", "k1")
    config = client_toml(tmp_path / "client.toml", 'keyring = "n.keys"\n')
    monkeypatch.setenv(ENV_CONFIG, str(config))
    status, _, err = run(capsys, "call", "--insecure", "udp://127.0.0.1:9", "svc.m")
    assert status == EXIT_USAGE
    assert f"it comes from {config}" in err


def test_real_command_reads_the_file(tmp_path: Path) -> None:
    keyring_file(tmp_path / "conf" / "n.keys", "from-real-file")
    config = client_toml(tmp_path / "conf" / "client.toml", 'keyring = "n.keys"\n')
    result = run_cli("keys", "list", "--json", env=child_env(**{ENV_CONFIG: str(config)}))
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["signing"] == "from-real-file"
    bad = client_toml(tmp_path / "bad.toml", "[keyring]\n")
    result = run_cli("keys", "list", env=child_env(**{ENV_CONFIG: str(bad)}))
    assert result.returncode == EXIT_USAGE
    assert result.stderr == f"clusterrpc: error: {bad}: `keyring` must be a file name, not {{}}\n"
