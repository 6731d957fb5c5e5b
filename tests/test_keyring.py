"""Keyrings: the TOML format, validation, file permissions, atomic saves, key lookup for
verification, rotation, and that secrets never show in reprs or errors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
from pathlib import Path
from typing import ClassVar

import pytest

from clusterrpc.auth import AuthScheme, Opener, Sealer, get_scheme
from clusterrpc.errors import (
    AuthenticationError,
    ConfigurationError,
    KeyringError,
    UnknownKeyError,
    UnknownSenderError,
)
from clusterrpc.keyring import MAX_FILE_SIZE, Key, Keyring, TrustedKey, fingerprint

SHARED_SCHEMES = ["hmac-sha256", "blake2b", "secretbox"]
ALL_SCHEMES = [*SHARED_SCHEMES, "ed25519"]


def seed(n: int) -> bytes:
    """A recognisable 32-byte test secret."""
    return bytes((n + i) % 256 for i in range(32))


def make_key(key_id: str, scheme: str, secret: bytes) -> Key:
    return Key(key_id, scheme, secret, get_scheme(scheme).public_from_secret(secret))


def public_of(secret: bytes) -> bytes:
    public = get_scheme("ed25519").public_from_secret(secret)
    assert public is not None
    return public


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


HMAC = make_key("hm-1", "hmac-sha256", seed(1))
ED = make_key("n1-ed", "ed25519", seed(2))
N2_SECRET = seed(3)
N2_ED = TrustedKey("n2", "n2-ed", "ed25519", public_of(N2_SECRET))


def full_keyring() -> Keyring:
    return Keyring(node="n1", keys=[HMAC, ED], trusted=[N2_ED], signing_key_id="hm-1")


def secret_forms(secret: bytes) -> list[str]:
    """Every way a secret could leak into text."""
    return [repr(secret), secret.hex(), b64(secret), str(list(secret))[1:-1]]


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_round_trip_for_every_scheme(scheme: str) -> None:
    key = Keyring.generate(scheme, key_id=f"{scheme}-k")
    keyring = Keyring(node="n1", keys=[key], signing_key_id=key.key_id)
    text = keyring.to_toml()
    again = Keyring.from_toml(text)
    assert again == keyring
    assert again.keys[key.key_id].secret == key.secret
    assert again.to_toml() == text
    assert hash(again) == hash(keyring)


def test_round_trip_of_everything_at_once() -> None:
    keyring = full_keyring()
    text = keyring.to_toml()
    assert text.startswith("# clusterrpc keyring: keep private (chmod 600)")
    assert Keyring.from_toml(text) == keyring
    assert list(Keyring.from_toml(text).keys) == ["hm-1", "n1-ed"]  # file order is kept


def test_public_only_round_trip_has_no_node_or_signing() -> None:
    public = Keyring(trusted=full_keyring().public_entries())
    text = public.to_toml()
    assert "secret" not in text.replace("no secrets", "")
    assert "node = \"n1\"" in text  # inside the [[trusted]] entry only
    assert not re.search(r"^(node|signing) =", text.split("[[trusted]]")[0], re.M)
    assert Keyring.from_toml(text) == public


def test_public_is_derived_when_absent() -> None:
    text = f"""
format = 1
node = "n1"
[[key]]
id = "n1-ed"
scheme = "ed25519"
secret = "{b64(ED.secret)}"
"""
    assert Keyring.from_toml(text).keys["n1-ed"].public == public_of(ED.secret)


def test_written_strings_are_escaped() -> None:
    odd = Keyring(trusted=[TrustedKey('we "q" \\ é #1', "k", "ed25519", N2_ED.public)])
    assert Keyring.from_toml(odd.to_toml()) == odd
    # control characters cannot be node names at all (nor could they be escaped in comments)
    with pytest.raises(KeyringError, match="printable"):
        Keyring(trusted=[TrustedKey("n2\n[[key]]", "k", "ed25519", N2_ED.public)])


# -- validation ----------------------------------------------------------------------------------

GOOD_KEY = f'[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\nsecret = "{b64(seed(1))}"\n'
ED_KEY = f'[[key]]\nid = "n1-ed"\nscheme = "ed25519"\nsecret = "{b64(ED.secret)}"\n'
TRUSTED = (
    f'[[trusted]]\nnode = "n2"\nid = "n2-ed"\nscheme = "ed25519"\npublic = "{b64(N2_ED.public)}"\n'
)

INVALID = {
    "not-toml": ("format = 1\nnode = \n", "not valid TOML"),
    "missing-format": ("node = 'n1'\n", "missing `format = 1`"),
    "format-2": ("format = 2\n", "unsupported format 2"),
    "format-bool": ("format = true\n", "unsupported format True"),
    "unknown-top-level": ("format = 1\nkeys = []\n", "unknown top-level field 'keys'"),
    "node-not-string": ("format = 1\nnode = 3\n", "`node` must be a string"),
    "key-not-table": ('format = 1\nkey = "x"\n', "must be an array of tables"),
    "unknown-key-field": (
        "format = 1\n" + GOOD_KEY + 'comment = "x"\n',
        "[[key]] #1 (id 'hm-1'): unknown field 'comment'",
    ),
    "missing-secret": (
        'format = 1\n[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\n',
        "[[key]] #1 (id 'hm-1'): missing field 'secret'",
    ),
    "bad-base64": (
        'format = 1\n[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\nsecret = "!!!!"\n',
        "`secret` is not valid base64",
    ),
    "unpadded-base64": (
        f'format = 1\n[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\n'
        f'secret = "{b64(seed(1)).rstrip("=")}"\n',
        "not valid base64",
    ),
    "noncanonical-base64": (
        # "AB==" decodes like "AA==" but has non-zero padding bits
        'format = 1\n[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\nsecret = "AB=="\n',
        "not canonical",
    ),
    "wrong-size": (
        f'format = 1\n[[key]]\nid = "hm-1"\nscheme = "hmac-sha256"\nsecret = "{b64(bytes(16))}"\n',
        "a hmac-sha256 secret must be 32 bytes, not 16",
    ),
    "unknown-scheme": (
        f'format = 1\n[[key]]\nid = "x-1"\nscheme = "rot13"\nsecret = "{b64(seed(1))}"\n',
        "[[key]] #1 (id 'x-1'): unknown authentication scheme 'rot13'; installed: ",
    ),
    "none-scheme": (
        'format = 1\n[[key]]\nid = "n-1"\nscheme = "none"\nsecret = ""\n',
        "the 'none' scheme uses no key",
    ),
    "bad-key-id": (
        f'format = 1\n[[key]]\nid = "a b"\nscheme = "hmac-sha256"\nsecret = "{b64(seed(1))}"\n',
        "key id 'a b' must be 1-64 characters",
    ),
    "long-key-id": (
        f'format = 1\n[[key]]\nid = "{"k" * 65}"\nscheme = "blake2b"\n'
        f'secret = "{b64(seed(1))}"\n',
        "must be 1-64 characters",
    ),
    "ed25519-without-node": ("format = 1\n" + ED_KEY, "names no node"),
    "public-mismatch": (
        'format = 1\nnode = "n1"\n' + ED_KEY + f'public = "{b64(N2_ED.public)}"\n',
        "public key does not match the secret",
    ),
    "public-wrong-size": (
        'format = 1\nnode = "n1"\n' + ED_KEY + f'public = "{b64(bytes(31))}"\n',
        "public key does not match the secret",
    ),
    "public-on-shared-key": (
        "format = 1\n" + GOOD_KEY + f'public = "{b64(N2_ED.public)}"\n',
        "a hmac-sha256 key has no public key",
    ),
    "signing-key-missing": (
        'format = 1\nsigning = "nope"\n' + GOOD_KEY,
        "signing key 'nope' is not in the keyring",
    ),
    "duplicate-id": ("format = 1\n" + GOOD_KEY + GOOD_KEY, "duplicate key id 'hm-1'"),
    "duplicate-trusted": ("format = 1\n" + TRUSTED + TRUSTED, "duplicate trusted key 'n2-ed'"),
    "unknown-trusted-field": (
        "format = 1\n" + TRUSTED + 'secret = "AA=="\n',
        "[[trusted]] #1 (node 'n2', id 'n2-ed'): unknown field 'secret'",
    ),
    "missing-trusted-node": (
        f'format = 1\n[[trusted]]\nid = "x"\nscheme = "ed25519"\npublic = "{b64(N2_ED.public)}"\n',
        "[[trusted]] #1: missing field 'node'",
    ),
    "trusted-shared-scheme": (
        f'format = 1\n[[trusted]]\nnode = "n2"\nid = "x"\nscheme = "blake2b"\n'
        f'public = "{b64(seed(1))}"\n',
        "blake2b uses a shared key; only public keys are trusted",
    ),
    "trusted-wrong-size": (
        f'format = 1\n[[trusted]]\nnode = "n2"\nid = "x"\nscheme = "ed25519"\n'
        f'public = "{b64(bytes(33))}"\n',
        "a public key of ed25519 must be 32 bytes, not 33",
    ),
    "trusted-empty-node": (
        f'format = 1\n[[trusted]]\nnode = ""\nid = "x"\nscheme = "ed25519"\n'
        f'public = "{b64(N2_ED.public)}"\n',
        "node name '' must be 1-255 bytes",
    ),
    "trusted-conflicts-with-own-key": (
        'format = 1\nnode = "n1"\n' + ED_KEY
        + f'[[trusted]]\nnode = "n1"\nid = "n1-ed"\nscheme = "ed25519"\n'
        f'public = "{b64(N2_ED.public)}"\n',
        "differs from this node's own key",
    ),
}


@pytest.mark.parametrize(("text", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_files_are_refused_naming_source_and_entry(text: str, message: str) -> None:
    with pytest.raises(KeyringError) as caught:
        Keyring.from_toml(text, source="/etc/test.keys")
    assert str(caught.value).startswith("/etc/test.keys: ")
    assert message in str(caught.value)
    assert b64(seed(1)) not in str(caught.value)
    assert b64(ED.secret) not in str(caught.value)


def test_keyring_errors_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Keyring.from_toml("format = 2\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node": "n1", "keys": [Key("k", "nope", seed(1))]}, "unknown authentication scheme"),
        ({"keys": [Key("k", "blake2b", seed(1)[:31])]}, "must be 32 bytes, not 31"),
        ({"keys": [Key("k", "blake2b", bytearray(seed(1)))]}, "secret must be bytes"),  # type: ignore[arg-type]
        ({"keys": [ED]}, "names no node"),
        ({"node": "n1", "keys": [Key("n1-ed", "ed25519", ED.secret)]}, "public key is missing"),
        ({"node": "n1", "keys": [Key("n1-ed", "ed25519", ED.secret, N2_ED.public)]},
         "does not match"),
        ({"keys": [HMAC], "signing_key_id": "nope"}, "signing key 'nope'"),
        ({"keys": [HMAC, HMAC]}, "duplicate key id"),
        ({"trusted": [N2_ED, N2_ED]}, "duplicate trusted key"),
        ({"trusted": [TrustedKey("n2", "x", "hmac-sha256", seed(1))]}, "uses a shared key"),
        ({"node": "bad\nname"}, "printable"),
        ({"node": "n" * 256}, "1-255 bytes"),
        ({"keys": full_keyring().keys}, "pass keyring.keys.values()"),
        ({"trusted": [HMAC]}, "must be TrustedKey objects"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(KeyringError, match=re.escape(message)):
        Keyring(**kwargs)  # type: ignore[arg-type]


def test_none_scheme_is_refused_with_a_clear_message() -> None:
    with pytest.raises(KeyringError, match="'none' scheme uses no key"):
        Keyring.generate("none")
    with pytest.raises(KeyringError, match="'none' scheme uses no key"):
        Keyring(keys=[Key("k", "none", b"")])


# -- secrets never show --------------------------------------------------------------------------


def test_reprs_never_show_secrets() -> None:
    keyring = full_keyring()
    texts = [repr(HMAC), str(HMAC), repr(ED), str(ED), repr(keyring), str(keyring),
             repr(keyring.keys), repr(list(keyring.keys.values()))]
    for text in texts:
        for key in (HMAC, ED):
            for form in secret_forms(key.secret):
                assert form not in text
    assert repr(HMAC) == (
        "Key(key_id='hm-1', scheme='hmac-sha256', secret=<hidden>, public=None)"
    )
    assert "key_id='n1-ed'" in repr(ED)
    assert "scheme='ed25519'" in repr(ED)
    assert "secret=<hidden>" in repr(ED)
    assert repr(keyring) == "<Keyring node='n1' keys=['hm-1*', 'n1-ed'] trusted=1>"


def test_error_messages_never_show_secrets() -> None:
    bad = Key("n1-ed", "ed25519", ED.secret, N2_ED.public)
    with pytest.raises(KeyringError) as caught:
        Keyring(node="n1", keys=[bad])
    for form in secret_forms(ED.secret):
        assert form not in str(caught.value)


# -- files: permissions, atomic saves ------------------------------------------------------------


def test_save_writes_mode_0600_atomically(tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    old_umask = os.umask(0)  # even a permissive umask must not open the file up
    try:
        full_keyring().save(path)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path) == full_keyring()
    assert os.listdir(tmp_path) == ["node.keys"]


def test_save_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "node.keys"
    path.write_text("old")
    path.chmod(0o644)
    full_keyring().save(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path) == full_keyring()
    assert os.listdir(tmp_path) == ["node.keys"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.keys"
    Keyring(keys=[HMAC], signing_key_id="hm-1").save(path)
    before = path.read_bytes()

    def broken_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyringError, match=r"cannot write keyring .*No space left on device"):
        full_keyring().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["node.keys"]


def test_save_into_missing_directory_is_a_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot write keyring"):
        full_keyring().save(tmp_path / "missing" / "node.keys")


def test_save_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.keys"
    Keyring(keys=[HMAC]).save(target)
    link = tmp_path / "link.keys"
    link.symlink_to(target)
    full_keyring().save(link)
    assert link.is_symlink()
    assert Keyring.load(target) == full_keyring()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_secret_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.keys"
    full_keyring().save(path)
    path.chmod(mode)
    with pytest.raises(KeyringError) as caught:
        Keyring.load(path)
    message = str(caught.value)
    assert f"chmod 600 {path}" in message
    assert f"mode {mode:04o}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_secret_file_is_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.keys"
    full_keyring().save(path)
    path.chmod(mode)
    assert Keyring.load(path) == full_keyring()


def test_public_only_file_may_be_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "n1.pub"
    public = Keyring(trusted=full_keyring().public_entries())
    path.write_text(public.to_toml())
    path.chmod(0o644)
    assert Keyring.load(path) == public


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist; create one with `clusterrpc keys new`"):
        Keyring.load(tmp_path / "missing.keys")
    with pytest.raises(KeyringError, match="cannot read keyring"):
        Keyring.load(tmp_path)  # a directory
    big = tmp_path / "big.keys"
    big.write_bytes(b"#" * (MAX_FILE_SIZE + 1))
    with pytest.raises(KeyringError, match="larger than"):
        Keyring.load(big)
    latin = tmp_path / "latin.keys"
    latin.write_bytes(b"format = 1\n# caf\xe9\n")
    with pytest.raises(KeyringError, match="not UTF-8"):
        Keyring.load(latin)
    invalid = tmp_path / "invalid.keys"
    invalid.write_text("format = 1\nsigning = 'x'\n")
    with pytest.raises(KeyringError, match=re.escape(f"{invalid}: signing key 'x'")):
        Keyring.load(invalid)


def test_load_refuses_a_non_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.keys"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # so that opening it for reading does not block
    try:
        with pytest.raises(KeyringError, match="not a regular file"):
            Keyring.load(fifo)
    finally:
        os.close(writer)


# -- lookups -------------------------------------------------------------------------------------


def test_signing_key() -> None:
    assert full_keyring().signing_key() is HMAC
    with pytest.raises(KeyringError, match=r"has no signing key; `clusterrpc keys use KEYID`"):
        Keyring(keys=[HMAC]).signing_key()


@pytest.mark.parametrize("scheme", SHARED_SCHEMES)
def test_verification_key_shared(scheme: str) -> None:
    key = make_key("s-1", scheme, seed(7))
    keyring = Keyring(keys=[key])
    assert keyring.verification_key(scheme, "s-1", "anyone") == key.secret


def test_verification_key_shared_wrong_scheme_or_id() -> None:
    keyring = full_keyring()
    with pytest.raises(UnknownKeyError) as caught:
        keyring.verification_key("blake2b", "hm-1", "n2")
    assert all(word in str(caught.value) for word in ("blake2b", "'hm-1'", "'n2'"))
    with pytest.raises(UnknownKeyError, match="'nope'"):
        keyring.verification_key("hmac-sha256", "nope", "n2")
    with pytest.raises(UnknownKeyError, match="not installed"):
        keyring.verification_key("rot13", "hm-1", "n2")
    # an ed25519 key id is not a shared key
    with pytest.raises(UnknownKeyError):
        keyring.verification_key("hmac-sha256", "n1-ed", "n1")


def test_verification_key_ed25519() -> None:
    keyring = full_keyring()
    assert keyring.verification_key("ed25519", "n2-ed", "n2") == N2_ED.public
    assert keyring.verification_key("ed25519", "n1-ed", "n1") == ED.public  # own key
    with pytest.raises(UnknownSenderError) as caught:
        keyring.verification_key("ed25519", "n3-ed", "n3")
    assert all(word in str(caught.value) for word in ("ed25519", "'n3-ed'", "'n3'"))
    # n2 is known, but n1's key id is not trusted *for n2*: n2 cannot speak as n1
    with pytest.raises(UnknownKeyError, match="'n1-ed' is trusted for node 'n2'"):
        keyring.verification_key("ed25519", "n1-ed", "n2")
    # nor can anyone claim n2's key under n1's name
    with pytest.raises(UnknownKeyError):
        keyring.verification_key("ed25519", "n2-ed", "n1")
    with pytest.raises(UnknownKeyError):
        keyring.verification_key("ed25519", "hm-1", "n1")  # own key of a shared scheme
    for error in (UnknownKeyError, UnknownSenderError):
        assert issubclass(error, AuthenticationError)


def test_verification_key_verifies_a_real_signature() -> None:
    n2 = Keyring(node="n2", keys=[make_key("n2-ed", "ed25519", N2_SECRET)],
                 signing_key_id="n2-ed")
    scheme = get_scheme("ed25519")
    packet = scheme.sealer(n2.signing_key().secret).seal(b"header", b"body")
    opener = scheme.opener(full_keyring().verification_key("ed25519", "n2-ed", "n2"))
    assert opener.open(packet, 6, 10) == b"body"


def test_trusted_entry_for_own_node_matching_own_key_is_allowed() -> None:
    own = full_keyring()
    keyring = own.with_trusted(own.public_entries()[0])
    assert keyring.verification_key("ed25519", "n1-ed", "n1") == ED.public


# -- immutable updates and rotation ---------------------------------------------------------------


def test_keyring_is_immutable() -> None:
    keyring = full_keyring()
    with pytest.raises(TypeError):
        keyring.keys["x"] = HMAC  # type: ignore[index]
    with pytest.raises(AttributeError):
        keyring.node = "n9"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        HMAC.secret = b""  # type: ignore[misc]
    keyring.with_key(make_key("b-1", "blake2b", seed(9)))
    assert keyring == full_keyring()


def test_rotation_add_use_remove() -> None:
    old = make_key("old", "hmac-sha256", seed(10))
    new = make_key("new", "hmac-sha256", seed(11))
    keyring = Keyring(keys=[old], signing_key_id="old")

    keyring = keyring.with_key(new)  # 1. installed everywhere, accepted, not signing
    assert keyring.signing_key() == old
    assert keyring.verification_key("hmac-sha256", "new", "n2") == new.secret
    assert keyring.verification_key("hmac-sha256", "old", "n2") == old.secret

    keyring = keyring.with_signing_key("new")  # 2. switch on every node
    assert keyring.signing_key() == new
    assert keyring.verification_key("hmac-sha256", "old", "n2") == old.secret

    with pytest.raises(KeyringError, match="is the signing key; switch first"):
        keyring.without_key("new")
    keyring = keyring.without_key("old")  # 3. remove the old key
    assert list(keyring.keys) == ["new"]
    with pytest.raises(UnknownKeyError):
        keyring.verification_key("hmac-sha256", "old", "n2")


def test_with_key_sign_and_conflicts() -> None:
    keyring = Keyring(keys=[HMAC])
    signing = keyring.with_key(make_key("b-1", "blake2b", seed(9)), sign=True)
    assert signing.signing_key_id == "b-1"
    assert keyring.with_key(HMAC) == keyring  # identical: nothing changes
    with pytest.raises(KeyringError, match="already has a different key 'hm-1'"):
        keyring.with_key(make_key("hm-1", "hmac-sha256", seed(99)))
    with pytest.raises(KeyringError, match="names no node"):
        keyring.with_key(ED)


def test_updates_of_unknown_entries_are_refused() -> None:
    keyring = full_keyring()
    with pytest.raises(KeyringError, match=r"no key 'nope' \(keys: hm-1, n1-ed\)"):
        keyring.with_signing_key("nope")
    with pytest.raises(KeyringError, match="no key 'nope'"):
        keyring.without_key("nope")
    with pytest.raises(KeyringError, match="no key 'x' is trusted for node 'n2'"):
        keyring.without_trusted("n2", "x")


def test_trust_and_untrust() -> None:
    keyring = full_keyring()
    assert keyring.with_trusted(N2_ED) == keyring
    with pytest.raises(KeyringError, match="different key 'n2-ed' is already trusted"):
        keyring.with_trusted(TrustedKey("n2", "n2-ed", "ed25519", public_of(seed(50))))
    untrusted = keyring.without_trusted("n2", "n2-ed")
    assert not untrusted.trusted
    with pytest.raises(UnknownSenderError):
        untrusted.verification_key("ed25519", "n2-ed", "n2")


def test_public_entries() -> None:
    expected = TrustedKey("n1", "n1-ed", "ed25519", public_of(ED.secret))
    assert full_keyring().public_entries() == [expected]
    assert Keyring(keys=[HMAC]).public_entries() == []


# -- generation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ALL_SCHEMES)
def test_generate(scheme: str) -> None:
    key = Keyring.generate(scheme)
    today = dt.date.today().strftime("%Y%m%d")
    assert re.fullmatch(rf"{re.escape(scheme)}-{today}-[0-9a-f]{{4}}", key.key_id)
    assert len(key.secret) == 32
    assert key.public == get_scheme(scheme).public_from_secret(key.secret)
    assert Keyring.generate(scheme).secret != key.secret


def test_generate_errors() -> None:
    with pytest.raises(KeyringError, match="unknown authentication scheme 'rot13'"):
        Keyring.generate("rot13")
    with pytest.raises(KeyringError, match="must be 1-64 characters"):
        Keyring.generate("blake2b", key_id="no/slash")


def test_fingerprint() -> None:
    assert fingerprint(b"x") == hashlib.sha256(b"x").hexdigest()[:16]


# -- plugin schemes: nothing is hard-coded -------------------------------------------------------


class _TinyPublicScheme(AuthScheme):
    """A public-key scheme with a 16-byte secret and no ``check_public``."""

    name: ClassVar[str] = "tiny-pk"
    scheme_id: ClassVar[int] = 200
    trailer_size: ClassVar[int] = 8
    public_key: ClassVar[bool] = True
    public_size: ClassVar[int] = 8
    secret_size: ClassVar[int] = 16

    def public_from_secret(self, secret: bytes) -> bytes | None:
        return hashlib.sha256(secret).digest()[:8]

    def sealer(self, secret: bytes) -> Sealer:
        raise NotImplementedError

    def opener(self, key: bytes) -> Opener:
        raise NotImplementedError


@pytest.fixture
def tiny_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``tiny-pk`` an installed scheme, for the keyring module only."""

    def lookup(name: str | int) -> AuthScheme:
        return _TinyPublicScheme() if name == "tiny-pk" else get_scheme(name)

    monkeypatch.setattr("clusterrpc.keyring.get_scheme", lookup)


@pytest.mark.usefixtures("tiny_scheme")
def test_plugin_scheme_uses_the_scheme_methods() -> None:
    key = Keyring.generate("tiny-pk", key_id="t-1")
    assert len(key.secret) == 16
    assert key.public == hashlib.sha256(key.secret).digest()[:8]
    keyring = Keyring(node="n1", keys=[key], signing_key_id="t-1",
                      trusted=[TrustedKey("n2", "t-2", "tiny-pk", b"12345678")])
    assert Keyring.from_toml(keyring.to_toml()) == keyring
    assert keyring.verification_key("tiny-pk", "t-2", "n2") == b"12345678"
    with pytest.raises(KeyringError, match="must be 16 bytes, not 32"):
        Keyring(node="n1", keys=[Key("t-1", "tiny-pk", seed(1), b"x")])
    with pytest.raises(KeyringError, match="names no node"):
        Keyring(keys=[key])
