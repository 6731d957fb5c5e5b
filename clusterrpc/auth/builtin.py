"""The built-in authentication schemes (``spec/packet.md``, "Authentication schemes").

=============  ==  =======  ===================================================================
name           id  trailer  construction
=============  ==  =======  ===================================================================
``none``        0        0  nothing; only where explicitly allowed (insecure set-ups, and local
                            Unix sockets where the kernel vouches for the peer)
``hmac-sha256``  1      32  HMAC-SHA-256(secret, header ‖ body), 32-byte shared secret
``blake2b``     2       32  BLAKE2b-256 keyed with the 32-byte shared secret, over header ‖ body
``ed25519``     3       64  Ed25519 signature of header ‖ body by the sender's own key; the
                            keyring holds the 32-byte seed, receivers the public key
``secretbox``   4       40  XChaCha20-Poly1305 (IETF AEAD) with a 32-byte shared key: the body is
                            encrypted, the header is the associated data; trailer = 24-byte
                            random nonce ‖ 16-byte tag
=============  ==  =======  ===================================================================

``secretbox`` is named for NaCl's secret-key box, but NaCl's ``crypto_secretbox`` cannot
authenticate data it does not encrypt; the header must stay readable (it names the key and the
sender) yet be authenticated, so the scheme uses libsodium's AEAD construction over the same kind
of 32-byte key. The nonce is random: XChaCha20's 192-bit nonces make collisions negligible even
if two nodes were misconfigured with the same name and sequence numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import ClassVar, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from clusterrpc.auth.base import AuthScheme, Opener, Sealer
from clusterrpc.errors import BadAuthenticatorError

__all__ = ["Blake2bScheme", "Ed25519Scheme", "HmacSha256Scheme", "NoneScheme", "SecretboxScheme"]


def _keyed_hmac_sha256(secret: bytes) -> _Keyed:
    """An HMAC-SHA-256 state keyed with ``secret``, ready to copy per packet.

    ``hmac.new`` wraps OpenSSL's HMAC object in a Python class whose ``copy`` and ``update`` are
    Python frames; on the small packets of cluster traffic those frames cost a third of the MAC.
    The C object that ``hmac`` itself uses (``_hashlib.hmac_new``, CPython 3.11-3.13) is taken
    directly when present; ``hmac.new`` is the fallback.
    """
    try:
        import _hashlib  # noqa: PLC0415

        keyed: _Keyed = _hashlib.hmac_new(secret, digestmod="sha256")
    except (ImportError, AttributeError, ValueError):  # no OpenSSL HMAC in this build
        return hmac.new(secret, digestmod=hashlib.sha256)
    return keyed


class _Keyed(Protocol):
    def copy(self) -> _Keyed: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Mac:
    """Sealer and opener for keyed-hash schemes: the keyed state is built once and copied per
    packet, so the key schedule is not repeated for every packet."""

    __slots__ = ("_keyed",)

    def __init__(self, keyed: _Keyed) -> None:
        self._keyed = keyed

    def seal(self, header: bytes, body: bytes) -> bytes:
        state = self._keyed.copy()
        state.update(header)
        state.update(body)
        return b"".join((header, body, state.digest()))

    def open(self, packet: bytes, body_start: int, trailer_start: int) -> bytes:
        state = self._keyed.copy()
        state.update(packet[:trailer_start])
        if not hmac.compare_digest(state.digest(), packet[trailer_start:]):
            raise BadAuthenticatorError("MAC does not match: packet forged or damaged")
        return packet[body_start:trailer_start]


class NoneScheme(AuthScheme):
    """No authentication at all. The packet layer refuses it unless explicitly allowed."""

    name: ClassVar[str] = "none"
    scheme_id: ClassVar[int] = 0
    trailer_size: ClassVar[int] = 0
    secret_size: ClassVar[int] = 0
    authenticates: ClassVar[bool] = False

    class _Plain:
        __slots__ = ()

        def seal(self, header: bytes, body: bytes) -> bytes:
            return header + body

        def open(self, packet: bytes, body_start: int, trailer_start: int) -> bytes:
            return packet[body_start:trailer_start]

    def sealer(self, secret: bytes) -> Sealer:
        return self._Plain()

    def opener(self, key: bytes) -> Opener:
        return self._Plain()


class HmacSha256Scheme(AuthScheme):
    """HMAC-SHA-256 with a 32-byte shared secret."""

    name: ClassVar[str] = "hmac-sha256"
    scheme_id: ClassVar[int] = 1
    trailer_size: ClassVar[int] = 32

    def sealer(self, secret: bytes) -> Sealer:
        self.check_secret(secret)
        return _Mac(_keyed_hmac_sha256(secret))

    def opener(self, key: bytes) -> Opener:
        self.check_secret(key)
        return _Mac(_keyed_hmac_sha256(key))


class Blake2bScheme(AuthScheme):
    """BLAKE2b with a 32-byte digest, keyed with a 32-byte shared secret (RFC 7693 keyed mode)."""

    name: ClassVar[str] = "blake2b"
    scheme_id: ClassVar[int] = 2
    trailer_size: ClassVar[int] = 32

    def sealer(self, secret: bytes) -> Sealer:
        self.check_secret(secret)
        return _Mac(hashlib.blake2b(key=secret, digest_size=32))

    def opener(self, key: bytes) -> Opener:
        self.check_secret(key)
        return _Mac(hashlib.blake2b(key=key, digest_size=32))


class _Ed25519Sealer:
    __slots__ = ("_key",)

    def __init__(self, key: nacl.signing.SigningKey) -> None:
        self._key = key

    def seal(self, header: bytes, body: bytes) -> bytes:
        signed = header + body
        return signed + self._key.sign(signed).signature


class _Ed25519Opener:
    __slots__ = ("_key",)

    def __init__(self, key: nacl.signing.VerifyKey) -> None:
        self._key = key

    def open(self, packet: bytes, body_start: int, trailer_start: int) -> bytes:
        try:
            self._key.verify(packet[:trailer_start], packet[trailer_start:])
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise BadAuthenticatorError("signature does not verify: packet forged") from None
        return packet[body_start:trailer_start]


class Ed25519Scheme(AuthScheme):
    """Ed25519 signatures: each node signs with its own key; receivers trust public keys by
    node name, so a node cannot speak as another."""

    name: ClassVar[str] = "ed25519"
    scheme_id: ClassVar[int] = 3
    trailer_size: ClassVar[int] = 64
    public_key: ClassVar[bool] = True

    def public_from_secret(self, secret: bytes) -> bytes | None:
        self.check_secret(secret)
        return bytes(nacl.signing.SigningKey(secret).verify_key)

    def sealer(self, secret: bytes) -> Sealer:
        self.check_secret(secret)
        return _Ed25519Sealer(nacl.signing.SigningKey(secret))

    def opener(self, key: bytes) -> Opener:
        self.check_public(key)
        return _Ed25519Opener(nacl.signing.VerifyKey(key))


_AEAD_ENCRYPT = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
_AEAD_DECRYPT = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
_NONCE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES


class _AeadBox:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal(self, header: bytes, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = _AEAD_ENCRYPT(body, header, nonce, self._key)  # ciphertext ‖ tag
        return b"".join((header, sealed[:-_TAG], nonce, sealed[-_TAG:]))

    def open(self, packet: bytes, body_start: int, trailer_start: int) -> bytes:
        nonce = packet[trailer_start : trailer_start + _NONCE]
        sealed = packet[body_start:trailer_start] + packet[trailer_start + _NONCE :]
        try:
            return bytes(_AEAD_DECRYPT(sealed, packet[:body_start], nonce, self._key))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise BadAuthenticatorError("ciphertext does not authenticate: forged") from None


class SecretboxScheme(AuthScheme):
    """Encrypted and authenticated with a 32-byte shared key (XChaCha20-Poly1305 AEAD): the
    body is secret, the header is authenticated in clear."""

    name: ClassVar[str] = "secretbox"
    scheme_id: ClassVar[int] = 4
    trailer_size: ClassVar[int] = _NONCE + _TAG
    encrypts: ClassVar[bool] = True

    def sealer(self, secret: bytes) -> Sealer:
        self.check_secret(secret)
        return _AeadBox(secret)

    def opener(self, key: bytes) -> Opener:
        self.check_secret(key)
        return _AeadBox(key)
