"""Where the ``clusterrpc`` command takes what a command line leaves out: the client defaults.

Every command that takes a keyring (``-k/--keyring FILE``: ``call``, ``methods``, ``members``,
``leader``, ``status`` and every ``keys`` subcommand) and the connection options
``--timeout``, ``--codec`` and ``--cluster`` look, for each setting, in this order, and take
the first they find:

1. the command-line option;
2. the environment: ``$CLUSTERRPC_KEYRING`` for the keyring (empty counts as unset);
3. the client configuration file, a TOML file of these keys, every one optional::

       keyring = "cluster.keys"     # relative to this file's directory; ~ is the home directory
       timeout = 5                  # seconds, a number > 0
       codec = "compact"            # a codec name or wire id (`clusterrpc codecs`)
       cluster = "ORG/UK/EDIN"      # else the keyring's `cluster`

   found at ``$CLUSTERRPC_CONFIG`` if that is set (it must then exist; set it empty to read no
   file), else ``$XDG_CONFIG_HOME/clusterrpc/client.toml``, else
   ``~/.config/clusterrpc/client.toml`` (either one only if it exists);
4. the built-in default: no keyring, 10 seconds, ``xmlrpc``, the keyring's ``cluster``.

A file that cannot be read, is not TOML, or has an unknown key or a value of the wrong type is a
usage error (exit status 2) whose message names the file and the key. The file is read only by
the commands that use it, once per command.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusterrpc.cli.exits import UsageError

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_CODEC",
    "DEFAULT_TIMEOUT",
    "ENV_CONFIG",
    "ENV_KEYRING",
    "KNOWN_KEYS",
    "ClientDefaults",
    "config_path",
    "load_defaults",
]

ENV_KEYRING = "CLUSTERRPC_KEYRING"
"""The environment variable naming the keyring file when ``-k`` is not given."""

ENV_CONFIG = "CLUSTERRPC_CONFIG"
"""The environment variable naming the client configuration file."""

CONFIG_NAME = os.path.join("clusterrpc", "client.toml")
"""The client configuration file's name below ``$XDG_CONFIG_HOME`` (or ``~/.config``)."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a call waits for its answer unless an option or the file says otherwise."""

DEFAULT_CODEC = "xmlrpc"
"""The codec of signed packets unless an option or the file says otherwise."""

KNOWN_KEYS = ("keyring", "timeout", "codec", "cluster")
"""The keys a client configuration file may hold."""


@dataclasses.dataclass(frozen=True)
class ClientDefaults:
    """The settings of one client configuration file (``None``: not set there), with the
    file's path (``None`` when no file is read)."""

    path: Path | None = None
    keyring: str | None = None
    """An absolute path (a relative one in the file is relative to the file's directory)."""
    timeout: float | None = None
    codec: str | int | None = None
    cluster: str | None = None

    def keyring_path(self, option: str | None, environ: Mapping[str, str] | None = None
                     ) -> tuple[str | None, str]:
        """The keyring file to use given the option's value (``None`` when not given), and
        where it came from, for messages: ``"-k"``, ``"$CLUSTERRPC_KEYRING"``, the
        configuration file's path, or ``""`` when there is none."""
        environ = os.environ if environ is None else environ
        if option:
            return option, "-k"
        from_env = environ.get(ENV_KEYRING)
        if from_env:
            return from_env, f"${ENV_KEYRING}"
        if self.keyring is not None:
            return self.keyring, str(self.path)
        return None, ""

    def timeout_or_default(self, option: float | None) -> float:
        """The option's timeout, else the file's, else :data:`DEFAULT_TIMEOUT`."""
        if option is not None:
            return option
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT

    def codec_or_default(self, option: str | None) -> str | int:
        """The option's codec, else the file's, else :data:`DEFAULT_CODEC`."""
        if option is not None:
            return option
        return self.codec if self.codec is not None else DEFAULT_CODEC

    def cluster_or(self, option: str | None, keyring_cluster: str | None) -> str | None:
        """The option's cluster, else the file's, else the keyring's (``keyring_cluster``)."""
        return option or self.cluster or keyring_cluster


def config_path(environ: Mapping[str, str] | None = None) -> tuple[Path | None, bool]:
    """The client configuration file to read, and whether it must exist (it was named by
    ``$CLUSTERRPC_CONFIG``); ``(None, False)`` when ``$CLUSTERRPC_CONFIG`` is set empty or
    no home directory is known."""
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_CONFIG)
    if named is not None:
        return (Path(named).expanduser(), True) if named else (None, False)
    base = environ.get("XDG_CONFIG_HOME")
    if base and os.path.isabs(base):
        return Path(base) / CONFIG_NAME, False
    home = environ.get("HOME")
    if not home:
        try:
            home = str(Path.home())
        except RuntimeError:
            return None, False
    return Path(home) / ".config" / CONFIG_NAME, False


def load_defaults(environ: Mapping[str, str] | None = None) -> ClientDefaults:
    """The client defaults from the configuration file :func:`config_path` names (empty
    :class:`ClientDefaults` when there is none). Raises
    :class:`~clusterrpc.cli.exits.UsageError` naming the file (and the key) when the file
    cannot be read, is not TOML, or holds an unknown key or a bad value."""
    path, required = config_path(environ)
    if path is None or (not required and not path.exists()):
        return ClientDefaults()
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise UsageError(f"cannot read the client configuration {path}: "
                         f"{error.strerror or error} (${ENV_CONFIG} names it)") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    return _checked(path, document)


def _checked(path: Path, document: dict[str, Any]) -> ClientDefaults:
    unknown = sorted(set(document) - set(KNOWN_KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown key `{unknown[0]}` (known: {', '.join(KNOWN_KEYS)})")

    def bad(key: str, wanted: str) -> UsageError:
        return UsageError(f"{path}: `{key}` must be {wanted}, not {document[key]!r}")

    keyring = document.get("keyring")
    if keyring is not None:
        if not isinstance(keyring, str) or not keyring:
            raise bad("keyring", "a file name")
        keyring = str((path.parent / Path(keyring).expanduser()).absolute())
    timeout = document.get("timeout")
    if timeout is not None:
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not 0 < timeout < math.inf):
            raise bad("timeout", "a positive number of seconds")
        timeout = float(timeout)
    codec = document.get("codec")
    if codec is not None:
        if isinstance(codec, bool) or not isinstance(codec, str | int) or codec == "":
            raise bad("codec", "a codec name or wire id")
        _check_codec(path, codec)
    cluster = document.get("cluster")
    if cluster is not None and (not isinstance(cluster, str) or not cluster):
        raise bad("cluster", "a non-empty string")
    return ClientDefaults(path=path, keyring=keyring, timeout=timeout, codec=codec,
                          cluster=cluster)


def _check_codec(path: Path, codec: str | int) -> None:
    from clusterrpc.codecs import default_registry  # noqa: PLC0415 - only when a file sets it

    registry = default_registry()
    names = registry.names()
    known = codec in names if isinstance(codec, str) else any(
        registry.by_name(name).codec_id == codec for name in names)
    if not known:
        raise UsageError(f"{path}: `codec` {codec!r} is not an installed codec "
                         f"(installed: {', '.join(names)})")
