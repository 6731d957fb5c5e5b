"""The authentication-scheme interface.

A scheme turns key material into a *sealer* (used when sending) and an *opener* (used when
receiving). Both are built once per key and reused for every packet, so per-key set-up (an HMAC's
padded key blocks, an ed25519 key expansion) is paid once, not per packet.

The packet layer hands a sealer the header and the body, and an opener the whole packet with the
offsets where its body and trailer start (``spec/packet.md``): offsets rather than three slices,
since every copy counts on the small packets of cluster traffic. The authenticator in the trailer
covers the header *and* the body. An encrypting scheme (``encrypts = True``) replaces the body by a
ciphertext of the same length and keeps the header in clear, authenticated.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Protocol

from clusterrpc.errors import KeyringError

__all__ = ["AuthScheme", "Opener", "Sealer"]


class Sealer(Protocol):
    """Seals outgoing packets with one key."""

    def seal(self, header: bytes, body: bytes) -> bytes:
        """Return the whole packet: ``header ‖ body_on_wire ‖ trailer``.

        ``body_on_wire`` is ``body`` itself, or its ciphertext of the same length for an
        encrypting scheme; ``trailer`` has exactly the scheme's ``trailer_size`` bytes.
        """
        ...


class Opener(Protocol):
    """Verifies (and decrypts) incoming packets with one key."""

    def open(self, packet: bytes, body_start: int, trailer_start: int) -> bytes:
        """Return the plaintext body, or raise
        :class:`~clusterrpc.errors.BadAuthenticatorError` — and nothing else — if the trailer
        does not authenticate the packet.

        ``packet[:body_start]`` is the header, ``packet[body_start:trailer_start]`` the body on
        the wire, ``packet[trailer_start:]`` the trailer, whose length the caller has checked.
        Comparisons are constant-time.
        """
        ...


class AuthScheme(abc.ABC):
    """Abstract base of every authentication scheme, built-in or plugin.

    Class attributes:

    ``name``
        registry and keyring name, equal to its entry-point name in ``clusterrpc.auth``;
    ``scheme_id``
        the header byte: 0-127 are clusterrpc's own, 128-255 are for plugins;
    ``trailer_size``
        bytes of authenticator after the body (0 only for ``none``);
    ``encrypts``
        whether the body travels encrypted;
    ``authenticates``
        ``False`` only for ``none``: such packets are refused unless explicitly allowed;
    ``public_key``
        ``True`` if receivers verify with a per-node public key (``ed25519``); ``False`` if the
        same secret signs and verifies (a shared key);
    ``secret_size``
        length of the secret a keyring holds for this scheme (for ``ed25519``, the seed);
    ``public_size``
        length of a public key (public-key schemes).

    Schemes are stateless; create sealers and openers from them.
    """

    name: ClassVar[str]
    scheme_id: ClassVar[int]
    trailer_size: ClassVar[int]
    encrypts: ClassVar[bool] = False
    public_key: ClassVar[bool] = False
    authenticates: ClassVar[bool] = True
    secret_size: ClassVar[int] = 32

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} id={self.scheme_id}>"

    def check_secret(self, secret: bytes) -> None:
        """Raise :class:`~clusterrpc.errors.KeyringError` unless ``secret`` suits this scheme."""
        if len(secret) != self.secret_size:
            raise KeyringError(
                f"a {self.name} secret must be {self.secret_size} bytes, not {len(secret)}"
            )

    public_size: ClassVar[int] = 32

    def check_public(self, public: bytes) -> None:
        """Raise :class:`~clusterrpc.errors.KeyringError` unless ``public`` is a public key of
        this scheme (public-key schemes only; others have no public keys)."""
        if not self.public_key:
            raise KeyringError(f"{self.name} uses a shared key; it has no public keys")
        if len(public) != self.public_size:
            raise KeyringError(
                f"a public key of {self.name} must be {self.public_size} bytes, not {len(public)}"
            )

    def generate_secret(self) -> bytes:
        """A new random secret (or seed) from the operating system's CSPRNG."""
        import nacl.utils  # noqa: PLC0415 - only key generation needs it

        return bytes(nacl.utils.random(self.secret_size))

    def public_from_secret(self, secret: bytes) -> bytes | None:
        """The public key that goes with ``secret`` (public-key schemes), else ``None``."""
        return None

    @abc.abstractmethod
    def sealer(self, secret: bytes) -> Sealer:
        """A sealer for ``secret`` (checked with :meth:`check_secret`)."""

    @abc.abstractmethod
    def opener(self, key: bytes) -> Opener:
        """An opener for ``key``: the shared secret, or the sender's public key."""
