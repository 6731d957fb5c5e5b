"""Keyrings: the keys a node signs and verifies packets with (``spec/keyring.md``).

A :class:`Keyring` holds

* this node's own **keys** (:class:`Key`), by key id. Every one of them is *accepted* on incoming
  packets; exactly one of them, the **signing key**, signs outgoing packets. For a shared-key
  scheme (``hmac-sha256``, ``blake2b``, ``secretbox``) the same secret is installed on every node;
  for a public-key scheme (``ed25519``) the secret is this node's own seed, and the keyring must
  name the node (``node``) that the key speaks for;
* the **trusted** public keys of other nodes (:class:`TrustedKey`), by ``(node, key id)``. A
  packet signed with a public-key scheme is verified with the key trusted for the node named in
  its header, so one node cannot speak as another.

Keys rotate without downtime because several keys are accepted at once and exactly one signs:
install the new key everywhere (accepted, not signing), switch the signing key on every node,
then remove the old key (``spec/keyring.md``, "Rotation").

Keyrings are immutable: the ``with_*``/``without_*`` methods return a new, validated keyring.
Every problem with a keyring or its file raises :class:`~clusterrpc.errors.KeyringError`, whose
message names the file and the entry and never contains key material; ``repr`` and ``str`` of
keys and keyrings never show secrets either.

The file format (TOML, bytes in standard padded base64)::

    # clusterrpc keyring: keep private (chmod 600)
    format = 1                      # required; the only version so far
    node = "n1"                     # optional; required when the file holds ed25519 keys
    cluster = "ORG/UK/EDIN"         # optional: the cluster clients (`connect`, CLI) call
    signing = "hmac-sha256-20261122-3f9a"   # optional: the key id that signs outgoing packets

    [[key]]                         # zero or more: this node's keys, all accepted
    id = "hmac-sha256-20261122-3f9a"        # 1-64 characters of A-Z a-z 0-9 . _ -
    scheme = "hmac-sha256"          # an installed authentication scheme, not "none"
    secret = "base64..."            # exactly the scheme's secret size (32 bytes built in)

    [[key]]
    id = "n1-ed"
    scheme = "ed25519"
    secret = "base64 32-byte seed"
    public = "base64 32-byte public key"    # optional on load (derived), always written

    [[trusted]]                     # zero or more: other nodes' public keys
    node = "n2"
    id = "n2-ed"
    scheme = "ed25519"              # a public-key scheme
    public = "base64..."

Unknown fields, ``format`` other than 1, bad base64, wrong sizes, a ``public`` that does not
match its ``secret``, duplicate ids and a ``signing`` id that names no key are all refused.
:meth:`Keyring.load` also refuses a file holding secrets that group or others may read or write
(``chmod 600`` fixes it, as for ssh private keys); a file of trusted public keys only may be
world-readable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shlex
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from clusterrpc.auth import AuthScheme, get_scheme
from clusterrpc.errors import (
    KeyringError,
    UnknownKeyError,
    UnknownSchemeError,
    UnknownSenderError,
)

__all__ = ["FORMAT", "MAX_FILE_SIZE", "Key", "Keyring", "TrustedKey", "fingerprint"]

FORMAT = 1
"""The keyring file format version that this module reads and writes."""

MAX_FILE_SIZE = 1024 * 1024
"""Largest keyring file :meth:`Keyring.load` reads. Real keyrings are a few KiB; the bound keeps
a mistaken path (a device, a log file) from being read without end."""

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_NODE_BYTES = 255
_TOP_FIELDS = ("format", "node", "cluster", "signing", "key", "trusted")
_KEY_FIELDS = ("id", "scheme", "secret", "public")
_TRUSTED_FIELDS = ("node", "id", "scheme", "public")


def fingerprint(public: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256.

    Meant for people comparing keys across nodes (``clusterrpc keys list``), not for security
    decisions: verification always uses the whole key.
    """
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True, slots=True, repr=False)
class Key:
    """One of this node's keys.

    ``secret`` is the shared secret of a shared-key scheme, or the seed of a public-key scheme
    (32 bytes for ``ed25519``); ``public`` is the public key derived from it for public-key
    schemes, and ``None`` otherwise. A ``Key`` is plain data: :class:`Keyring` validates it (and
    :meth:`Keyring.generate` makes valid ones). ``repr`` and ``str`` never show the secret.
    """

    key_id: str
    scheme: str
    secret: bytes
    public: bytes | None = None

    def __repr__(self) -> str:
        public = "None" if self.public is None else f"<{fingerprint(self.public)}>"
        return (
            f"Key(key_id={self.key_id!r}, scheme={self.scheme!r}, secret=<hidden>, "
            f"public={public})"
        )


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """Another node's public key, trusted to verify packets whose header names ``node`` and
    ``key_id`` (public-key schemes only)."""

    node: str
    key_id: str
    scheme: str
    public: bytes


class Keyring:
    """An immutable set of keys: this node's own keys (one of which signs) and the public keys
    it trusts for other nodes.

    Every constructor and ``with_*``/``without_*`` method validates the whole keyring and raises
    :class:`~clusterrpc.errors.KeyringError` if it is invalid: an unknown scheme, a secret of the
    wrong size, a ``public`` that does not match its secret, a public-key key without ``node``,
    a ``signing_key_id`` that names no key, or a duplicate id.
    """

    __slots__ = ("_cluster", "_keys", "_node", "_signing_key_id", "_trusted", "_trusted_nodes")

    def __init__(
        self,
        *,
        node: str | None = None,
        cluster: str | None = None,
        keys: Iterable[Key] = (),
        trusted: Iterable[TrustedKey] = (),
        signing_key_id: str | None = None,
    ) -> None:
        if node is not None:
            _check_node(node, "node")
        if cluster is not None:
            _check_node(cluster, "cluster")  # the same rule as names in packet headers
        own: dict[str, Key] = {}
        for key in keys:
            if not isinstance(key, Key):
                raise KeyringError(
                    f"keys must be Key objects, not {type(key).__name__} "
                    "(to copy a keyring's keys, pass keyring.keys.values())"
                )
            _check_key(key)
            if key.key_id in own:
                raise KeyringError(f"duplicate key id {key.key_id!r}")
            if key.public is not None and node is None:
                raise KeyringError(
                    f"key {key.key_id!r}: a {key.scheme} key signs as one node, "
                    "but the keyring names no node"
                )
            own[key.key_id] = key
        others: dict[tuple[str, str], TrustedKey] = {}
        for entry in trusted:
            if not isinstance(entry, TrustedKey):
                raise KeyringError(
                    f"trusted entries must be TrustedKey objects, not {type(entry).__name__}"
                )
            _check_trusted(entry)
            where = (entry.node, entry.key_id)
            if where in others:
                raise KeyringError(
                    f"duplicate trusted key {entry.key_id!r} for node {entry.node!r}"
                )
            mine = own.get(entry.key_id) if entry.node == node else None
            if mine is not None and (mine.scheme, mine.public) != (entry.scheme, entry.public):
                # The same (node, key id) would verify with two different keys depending on
                # which table is asked first: refuse the ambiguity.
                raise KeyringError(
                    f"trusted key {entry.key_id!r} for node {entry.node!r} differs from this "
                    "node's own key with that id"
                )
            others[where] = entry
        if signing_key_id is not None and signing_key_id not in own:
            raise KeyringError(
                f"signing key {signing_key_id!r} is not in the keyring"
                f" (keys: {', '.join(own) or 'none'})"
            )
        self._node = node
        self._cluster = cluster
        self._keys = own
        self._trusted = others
        self._trusted_nodes = frozenset(name for name, _ in others)
        self._signing_key_id = signing_key_id

    # -- reading -------------------------------------------------------------------------------

    @property
    def cluster(self) -> str | None:
        """The cluster these keys are for, when the file says (``connect()`` and the CLI use
        it as their default cluster name)."""
        return self._cluster

    @property
    def node(self) -> str | None:
        """The node these keys belong to (required when the keyring holds public-key keys)."""
        return self._node

    @property
    def signing_key_id(self) -> str | None:
        """The id of the key that signs outgoing packets, or ``None``."""
        return self._signing_key_id

    @property
    def keys(self) -> Mapping[str, Key]:
        """This node's keys by key id (a read-only view, in file order)."""
        return MappingProxyType(self._keys)

    @property
    def trusted(self) -> Mapping[tuple[str, str], TrustedKey]:
        """Other nodes' trusted public keys by ``(node, key id)`` (a read-only view)."""
        return MappingProxyType(self._trusted)

    def signing_key(self) -> Key:
        """The key that signs outgoing packets.

        Raises :class:`KeyringError` if no key is selected; the caller cannot send
        authenticated packets until one is (``clusterrpc keys use KEYID``).
        """
        if self._signing_key_id is None:
            raise KeyringError("the keyring has no signing key; `clusterrpc keys use KEYID`")
        return self._keys[self._signing_key_id]

    def verification_key(self, scheme: str, key_id: str, sender: str) -> bytes:
        """The key that verifies a packet from ``sender`` made with ``scheme`` and ``key_id``.

        For a shared-key scheme: the secret of this keyring's key ``key_id``, if it has that
        scheme. For a public-key scheme: the public key trusted for ``(sender, key_id)``, or,
        when ``sender`` is this node, its own key's public key.

        Raises :class:`~clusterrpc.errors.UnknownSenderError` if the scheme is a public-key
        scheme and no key at all is trusted for ``sender`` (and ``sender`` is not this node),
        and :class:`~clusterrpc.errors.UnknownKeyError` for any other missing key (including a
        scheme that is not installed). Either way the caller must drop the packet. Messages name
        the scheme, key id and sender, never key material.
        """
        try:
            auth = get_scheme(scheme)
        except UnknownSchemeError:
            raise UnknownKeyError(
                f"no key {key_id!r} for scheme {scheme!r} (from {sender!r}): "
                "scheme not installed"
            ) from None
        if not auth.public_key:
            key = self._keys.get(key_id)
            if key is None or key.scheme != scheme:
                raise UnknownKeyError(
                    f"no {scheme} key {key_id!r} in the keyring (packet from {sender!r})"
                )
            return key.secret
        entry = self._trusted.get((sender, key_id))
        if entry is not None and entry.scheme == scheme:
            return entry.public
        if sender == self._node:
            key = self._keys.get(key_id)
            if key is not None and key.scheme == scheme and key.public is not None:
                return key.public
        elif sender not in self._trusted_nodes:
            raise UnknownSenderError(
                f"no public key is trusted for node {sender!r} "
                f"(packet signed with {scheme} key {key_id!r})"
            )
        raise UnknownKeyError(f"no {scheme} key {key_id!r} is trusted for node {sender!r}")

    def public_entries(self) -> list[TrustedKey]:
        """This node's own public-key-scheme keys, as other nodes should trust them (what
        ``clusterrpc keys export-public`` writes)."""
        if self._node is None:
            return []  # validation guarantees there is no public-key key then
        return [
            TrustedKey(node=self._node, key_id=key.key_id, scheme=key.scheme, public=key.public)
            for key in self._keys.values()
            if key.public is not None
        ]

    # -- immutable updates ---------------------------------------------------------------------

    def _replace(self, **changes: Any) -> Keyring:
        fields: dict[str, Any] = {
            "node": self._node,
            "cluster": self._cluster,
            "keys": self._keys.values(),
            "trusted": self._trusted.values(),
            "signing_key_id": self._signing_key_id,
        }
        fields.update(changes)
        return Keyring(**fields)

    def with_key(self, key: Key, *, sign: bool = False) -> Keyring:
        """A keyring that also accepts ``key`` (and signs with it if ``sign``).

        Adding a key that is already present, identical, changes nothing; a different key with
        the same id raises :class:`KeyringError` (remove the old one first), so an import can
        never silently replace a key.
        """
        present = self._keys.get(key.key_id)
        if present is not None and present != key:
            raise KeyringError(
                f"the keyring already has a different key {key.key_id!r}; remove it first"
            )
        keys = dict(self._keys)
        keys[key.key_id] = key
        signing = key.key_id if sign else self._signing_key_id
        return self._replace(keys=keys.values(), signing_key_id=signing)

    def with_signing_key(self, key_id: str) -> Keyring:
        """A keyring that signs with its key ``key_id``; raises :class:`KeyringError` if there is
        no such key."""
        if key_id not in self._keys:
            raise KeyringError(f"no key {key_id!r} (keys: {', '.join(self._keys) or 'none'})")
        return self._replace(signing_key_id=key_id)

    def without_key(self, key_id: str) -> Keyring:
        """A keyring without its key ``key_id``.

        Raises :class:`KeyringError` if there is no such key, or if it is the signing key:
        switch to another one first (``clusterrpc keys use KEYID``), so a node is never left
        unable to sign by accident.
        """
        if key_id not in self._keys:
            raise KeyringError(f"no key {key_id!r} (keys: {', '.join(self._keys) or 'none'})")
        if key_id == self._signing_key_id:
            raise KeyringError(
                f"key {key_id!r} is the signing key; switch first with "
                "`clusterrpc keys use KEYID`"
            )
        keys = [key for key in self._keys.values() if key.key_id != key_id]
        return self._replace(keys=keys)

    def with_trusted(self, trusted: TrustedKey) -> Keyring:
        """A keyring that also trusts ``trusted``.

        Trusting an identical entry again changes nothing; a different public key for the same
        node and key id raises :class:`KeyringError` (untrust the old one first), so an import
        cannot silently substitute a node's key.
        """
        where = (trusted.node, trusted.key_id)
        present = self._trusted.get(where)
        if present is not None and present != trusted:
            raise KeyringError(
                f"a different key {trusted.key_id!r} is already trusted for node "
                f"{trusted.node!r}; untrust it first"
            )
        entries = dict(self._trusted)
        entries[where] = trusted
        return self._replace(trusted=entries.values())

    def without_trusted(self, node: str, key_id: str) -> Keyring:
        """A keyring that no longer trusts ``node``'s key ``key_id``; raises
        :class:`KeyringError` if it is not trusted."""
        if (node, key_id) not in self._trusted:
            raise KeyringError(f"no key {key_id!r} is trusted for node {node!r}")
        entries = [entry for where, entry in self._trusted.items() if where != (node, key_id)]
        return self._replace(trusted=entries)

    @staticmethod
    def generate(scheme: str, *, key_id: str | None = None) -> Key:
        """A new key with a random secret from ``scheme`` (any installed scheme that uses a key).

        The default id is ``f"{scheme}-{YYYYMMDD}-{4 random hex digits}"`` with today's date, so
        ids sort by age and two keys made on one day still differ. Raises :class:`KeyringError`
        for an unknown scheme, for ``none`` (which uses no key), and for an invalid ``key_id``.
        """
        auth = _scheme(scheme)
        if auth.secret_size == 0:
            raise KeyringError(f"the {scheme!r} scheme uses no key; there is nothing to generate")
        if key_id is None:
            key_id = f"{scheme}-{dt.date.today():%Y%m%d}-{secrets.token_hex(2)}"
        secret = auth.generate_secret()
        key = Key(key_id, scheme, secret, auth.public_from_secret(secret))
        _check_key(key)
        return key

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> Keyring:
        """Parse a keyring file's text (format above and in ``spec/keyring.md``).

        Raises :class:`KeyringError` naming ``source`` and the offending entry for anything
        invalid; the message never contains key material.
        """
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise KeyringError(f"{source}: not valid TOML: {error}") from None
        unknown = [name for name in document if name not in _TOP_FIELDS]
        if unknown:
            raise KeyringError(
                f"{source}: unknown top-level field {unknown[0]!r} "
                f"(allowed: {', '.join(_TOP_FIELDS)})"
            )
        version = document.get("format")
        if version is None:
            raise KeyringError(f"{source}: missing `format = {FORMAT}`")
        if type(version) is not int or version != FORMAT:
            raise KeyringError(
                f"{source}: unsupported format {version!r}; this version reads format {FORMAT}"
            )
        node = _optional_str(document, "node", source)
        cluster = _optional_str(document, "cluster", source)
        signing = _optional_str(document, "signing", source)
        keys = [
            _parse_key(entry, f"{source}: [[key]] #{number}")
            for number, entry in enumerate(_tables(document, "key", source), 1)
        ]
        trusted = [
            _parse_trusted(entry, f"{source}: [[trusted]] #{number}")
            for number, entry in enumerate(_tables(document, "trusted", source), 1)
        ]
        try:
            return cls(node=node, cluster=cluster, keys=keys, trusted=trusted,
                       signing_key_id=signing)
        except KeyringError as error:
            raise KeyringError(f"{source}: {error}") from None

    def to_toml(self) -> str:
        """The keyring as a commented TOML file; ``Keyring.from_toml(k.to_toml()) == k``."""
        if self._keys:
            lines = [
                "# clusterrpc keyring: keep private (chmod 600). Format: spec/keyring.md.",
                "# Every [[key]] is accepted on incoming packets; the key named by `signing`",
                "# signs outgoing packets. [[trusted]] entries are other nodes' public keys.",
                "# Change it with `clusterrpc keys ...`.",
            ]
        else:
            lines = [
                "# clusterrpc public keys: no secrets, safe to share. Format: spec/keyring.md.",
                "# Trust them on a node with `clusterrpc keys import -k KEYRING THIS_FILE`.",
            ]
        lines.append(f"format = {FORMAT}")
        if self._node is not None:
            lines.append(f"node = {_toml_str(self._node)}")
        if self._cluster is not None:
            lines.append(f"cluster = {_toml_str(self._cluster)}")
        if self._signing_key_id is not None:
            lines.append(f"signing = {_toml_str(self._signing_key_id)}")
        for key in self._keys.values():
            role = "signs and is accepted" if key.key_id == self._signing_key_id else "accepted"
            kind = (
                f"this node's own key, public key {fingerprint(key.public)}"
                if key.public is not None
                else "shared secret: the same on every node"
            )
            lines += [
                "",
                f"# {key.scheme}, {kind}; {role}",
                "[[key]]",
                f"id = {_toml_str(key.key_id)}",
                f"scheme = {_toml_str(key.scheme)}",
                f"secret = {_toml_str(_b64(key.secret))}",
            ]
            if key.public is not None:
                lines.append(f"public = {_toml_str(_b64(key.public))}")
        for entry in self._trusted.values():
            lines += [
                "",
                f"# {entry.scheme} public key of node {entry.node}: {fingerprint(entry.public)}",
                "[[trusted]]",
                f"node = {_toml_str(entry.node)}",
                f"id = {_toml_str(entry.key_id)}",
                f"scheme = {_toml_str(entry.scheme)}",
                f"public = {_toml_str(_b64(entry.public))}",
            ]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read the keyring file at ``path``.

        Raises :class:`KeyringError` if the file cannot be read, is not a regular file, is larger
        than :data:`MAX_FILE_SIZE`, is invalid, or holds secrets (any ``[[key]]``) while group or
        others may read or write it: the message then says to run ``chmod 600 PATH``. A file of
        trusted public keys only may be world-readable.
        """
        name = os.fspath(path)
        try:
            # Permissions are checked on the opened file, not the path, so the file that is
            # judged is the file that is read.
            with open(name, "rb") as handle:
                status = os.fstat(handle.fileno())
                if not stat.S_ISREG(status.st_mode):
                    raise KeyringError(f"keyring {name} is not a regular file")
                data = handle.read(MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            raise KeyringError(
                f"keyring {name} does not exist; create one with `clusterrpc keys new`"
            ) from None
        except OSError as error:
            raise KeyringError(f"cannot read keyring {name}: {_reason(error)}") from None
        if len(data) > MAX_FILE_SIZE:
            raise KeyringError(f"keyring {name} is larger than {MAX_FILE_SIZE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyringError(f"{name}: not UTF-8 text") from None
        keyring = cls.from_toml(text, source=name)
        mode = stat.S_IMODE(status.st_mode)
        if keyring._keys and mode & 0o077:
            raise KeyringError(
                f"keyring {name} holds secret keys but is accessible by group or others "
                f"(mode {mode:04o}); run `chmod 600 {shlex.quote(name)}`"
            )
        return keyring

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the keyring to ``path`` atomically, with mode 0600.

        The text goes to a new file in the same directory (created 0600, so no secret is ever
        readable by others), is flushed to disk, and then replaces ``path`` in one rename:
        readers see the old file or the new one, never a mix, and a crash leaves the old one. If
        ``path`` is a symbolic link, the file it points to is replaced. Raises
        :class:`KeyringError` if the file cannot be written; no temporary file is left behind.
        """
        name = os.fspath(path)
        target = os.path.realpath(name)
        directory, base = os.path.split(target)
        data = self.to_toml().encode("utf-8")
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{base}.", dir=directory)
        except OSError as error:
            raise KeyringError(f"cannot write keyring {name}: {_reason(error)}") from None
        replaced = False
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            replaced = True
        except OSError as error:
            raise KeyringError(f"cannot write keyring {name}: {_reason(error)}") from None
        finally:
            if not replaced:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        _fsync_directory(directory)

    # -- comparison and display ----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        return (self._node, self._cluster, self._signing_key_id, self._keys, self._trusted) == (
            other._node,
            other._cluster,
            other._signing_key_id,
            other._keys,
            other._trusted,
        )

    def __hash__(self) -> int:
        return hash(
            (
                self._node,
                self._signing_key_id,
                frozenset(self._keys.values()),
                frozenset(self._trusted.values()),
            )
        )

    def __repr__(self) -> str:
        keys = [
            key_id + ("*" if key_id == self._signing_key_id else "") for key_id in self._keys
        ]
        return f"<Keyring node={self._node!r} keys={keys!r} trusted={len(self._trusted)}>"


# -- validation --------------------------------------------------------------------------------


def _scheme(name: str) -> AuthScheme:
    """The installed scheme ``name``; an unknown one is a keyring problem here."""
    try:
        return get_scheme(name)
    except UnknownSchemeError as error:
        raise KeyringError(str(error)) from None


def _check_key_id(key_id: object, where: str) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyringError(
            f"{where}: key id {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
        )


def _check_node(node: object, where: str) -> None:
    # The rule of sender names in packet headers (spec/packet.md, "Header"): printable UTF-8,
    # 1-255 bytes. A keyring must not hold a node name no packet can carry.
    if (
        not isinstance(node, str)
        or not node
        or not node.isprintable()
        or len(node.encode("utf-8")) > _MAX_NODE_BYTES
    ):
        raise KeyringError(
            f"{where}: node name {node!r} must be 1-{_MAX_NODE_BYTES} bytes of printable UTF-8"
        )


def _check_key(key: Key, where: str | None = None) -> None:
    """Raise :class:`KeyringError`, prefixed with ``where`` (default: the key's id), unless
    ``key`` is a valid key of an installed scheme with a matching public key."""
    _check_key_id(key.key_id, where or "key")
    where = where or f"key {key.key_id!r}"
    if not isinstance(key.scheme, str):
        raise KeyringError(f"{where}: scheme must be a name, not {key.scheme!r}")
    try:
        auth = _scheme(key.scheme)
        if auth.secret_size == 0:
            raise KeyringError(f"the {key.scheme!r} scheme uses no key")
        if not isinstance(key.secret, bytes):
            raise KeyringError(f"secret must be bytes, not {type(key.secret).__name__}")
        auth.check_secret(key.secret)
        expected = auth.public_from_secret(key.secret)
    except KeyringError as error:
        raise KeyringError(f"{where}: {error}") from None
    if auth.public_key and expected is None:
        raise KeyringError(f"{where}: scheme {key.scheme!r} derives no public key")
    if key.public == expected:
        return
    if expected is None:
        raise KeyringError(f"{where}: a {key.scheme} key has no public key")
    if key.public is None:
        raise KeyringError(
            f"{where}: the {key.scheme} public key is missing (Keyring.generate derives it, "
            "as does scheme.public_from_secret)"
        )
    raise KeyringError(f"{where}: public key does not match the secret")


def _check_trusted(entry: TrustedKey, where: str | None = None) -> None:
    """Raise :class:`KeyringError`, prefixed with ``where`` (default: the entry's node and id),
    unless ``entry`` is a plausible public key of an installed public-key scheme."""
    _check_node(entry.node, where or "trusted key")
    _check_key_id(entry.key_id, where or f"trusted key of node {entry.node!r}")
    where = where or f"trusted key {entry.key_id!r} of node {entry.node!r}"
    if not isinstance(entry.scheme, str):
        raise KeyringError(f"{where}: scheme must be a name, not {entry.scheme!r}")
    try:
        auth = _scheme(entry.scheme)
        if not auth.public_key:
            raise KeyringError(
                f"{entry.scheme} uses a shared key; only public keys are trusted"
            )
        if not isinstance(entry.public, bytes) or not entry.public:
            raise KeyringError("public key must be non-empty bytes")
        auth.check_public(entry.public)
    except KeyringError as error:
        raise KeyringError(f"{where}: {error}") from None


# -- TOML reading and writing ------------------------------------------------------------------


def _tables(document: dict[str, Any], name: str, source: str) -> list[dict[str, Any]]:
    value = document.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise KeyringError(f"{source}: `{name}` must be an array of tables ([[{name}]])")
    return value


def _optional_str(table: dict[str, Any], field: str, where: str) -> str | None:
    value = table.get(field)
    if value is not None and not isinstance(value, str):
        raise KeyringError(f"{where}: `{field}` must be a string")
    return value


def _fields(table: dict[str, Any], allowed: tuple[str, ...], required: int, where: str) -> None:
    """Refuse unknown fields and missing required ones (the first ``required`` of ``allowed``)."""
    for field in table:
        if field not in allowed:
            raise KeyringError(
                f"{where}: unknown field {field!r} (allowed: {', '.join(allowed)})"
            )
    for field in allowed[:required]:
        if field not in table:
            raise KeyringError(f"{where}: missing field {field!r}")


def _bytes(table: dict[str, Any], field: str, where: str) -> bytes:
    text = _optional_str(table, field, where)
    assert text is not None  # the caller checked that the field is present
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: `{field}` is not valid base64") from None
    # Only the canonical spelling is accepted (padding present, unused bits zero), so a file
    # re-written by to_toml is byte-for-byte what it read.
    if base64.b64encode(data).decode("ascii") != text:
        raise KeyringError(f"{where}: `{field}` is not canonical padded base64")
    return data


def _parse_key(table: dict[str, Any], label: str) -> Key:
    named = table.get("id")
    where = f"{label} (id {named!r})" if isinstance(named, str) else label
    _fields(table, _KEY_FIELDS, 3, where)
    scheme = _optional_str(table, "scheme", where)
    assert scheme is not None  # checked by _fields
    secret = _bytes(table, "secret", where)
    public: bytes | None
    if "public" in table:
        public = _bytes(table, "public", where)
    else:
        try:
            public = _derive_public(scheme, secret)
        except KeyringError as error:
            raise KeyringError(f"{where}: {error}") from None
    key = Key(table["id"], scheme, secret, public)
    _check_key(key, where)  # also checks the id's type
    return key


def _derive_public(scheme: str, secret: bytes) -> bytes | None:
    """The public key of ``secret`` for a public-key scheme (``None`` for a shared-key one)."""
    auth = _scheme(scheme)
    if not auth.public_key:
        return None
    auth.check_secret(secret)  # a plugin's public_from_secret need not check sizes itself
    return auth.public_from_secret(secret)


def _parse_trusted(table: dict[str, Any], label: str) -> TrustedKey:
    node, key_id = table.get("node"), table.get("id")
    where = label
    if isinstance(node, str) and isinstance(key_id, str):
        where = f"{label} (node {node!r}, id {key_id!r})"
    _fields(table, _TRUSTED_FIELDS, 4, where)
    scheme = _optional_str(table, "scheme", where)
    assert scheme is not None  # checked by _fields
    # node and id are only known to be present here; _check_trusted checks their types
    entry = TrustedKey(table["node"], table["id"], scheme, _bytes(table, "public", where))
    _check_trusted(entry, where)
    return entry


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _toml_str(text: str) -> str:
    """``text`` as a TOML basic string. JSON's escapes are a subset of TOML's; DEL is the one
    control character JSON leaves raw that TOML forbids."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable. Best effort: some file systems refuse to sync a
    directory, and the new file is complete either way."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
