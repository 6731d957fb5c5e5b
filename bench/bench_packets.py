"""Packet benchmark: seal+open of a packet per authentication scheme, side by side with the bare
cryptographic primitive on the same body bytes, in one run.

Run from the repository root after installing clusterrpc::

    python bench/bench_packets.py            # about a minute
    python bench/bench_packets.py --quick    # a few seconds, rougher figures

One "operation" is signing and verifying once:

* envelope: ``PacketSealer.seal`` (header, sequence number, authenticator) then
  ``PacketOpener.open`` (header parsing, cluster/key/sender checks, verification, replay window)
  — everything a receiver does before it may decode the body;
* bare primitive: computing the authenticator of the body and checking it, as a hand-made
  protocol would: ``hmac.digest`` + ``hmac.compare_digest`` (the standard library's fastest HMAC;
  ``hmac.new(...).digest()``, the common idiom, is shown too), keyed ``hashlib.blake2b``, PyNaCl's
  ``SigningKey.sign``/``VerifyKey.verify``, and PyNaCl's XChaCha20-Poly1305 encrypt/decrypt.

Payloads: the xmlrpc body of a small election-vote call, and a 64 KiB body. Each figure is the
best of several interleaved repeats; the ratio is envelope time / bare time (the envelope's cost
over the bare primitive: 1.00x would be free).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import platform
import sys
import time
from collections.abc import Callable

import nacl.bindings
import nacl.signing
from _timing import measure

from clusterrpc.codecs import get_codec
from clusterrpc.envelope import PacketOpener, PacketSealer
from clusterrpc.keyring import Keyring
from clusterrpc.packet import Flags

CLUSTER = "ORG/UK/EDIN"
EPOCH = 1_764_000_000_000_000

PAYLOADS = {
    "small call": get_codec("xmlrpc").encode_call(
        "election.vote",
        [{"term": 42, "candidate": "node-17", "last_log_index": 1_234_567,
          "last_log_term": 41, "granted": True}],
    ),
    "64 KiB body": bytes(range(256)) * 256,
}


def _envelope(scheme: str, body: bytes) -> Callable[[], object]:
    key = Keyring.generate(scheme, key_id="bench")
    ring = Keyring(node="n1", keys=[key], signing_key_id="bench")
    sealer = PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=ring,
                          max_packet=1 << 20)
    opener = PacketOpener(cluster=CLUSTER, keyring=ring, max_packet=1 << 20)
    seal, open_ = sealer.seal, opener.open
    now = time.time()

    def run() -> object:
        packet = seal(flags=Flags.CALL, codec_id=1, call_id=1, body=body, now=now)
        return open_(packet, now=now)

    return run


def _bare(scheme: str, body: bytes) -> dict[str, Callable[[], object]]:
    secret = os.urandom(32)
    if scheme == "hmac-sha256":
        def one_shot() -> object:
            tag = hmac.digest(secret, body, "sha256")
            return hmac.compare_digest(hmac.digest(secret, body, "sha256"), tag)

        def idiom() -> object:
            tag = hmac.new(secret, body, hashlib.sha256).digest()
            return hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), tag)

        return {"bare hmac.digest": one_shot, "bare hmac.new": idiom}
    if scheme == "blake2b":
        def blake() -> object:
            tag = hashlib.blake2b(body, key=secret, digest_size=32).digest()
            return hmac.compare_digest(
                hashlib.blake2b(body, key=secret, digest_size=32).digest(), tag
            )

        return {"bare blake2b": blake}
    if scheme == "ed25519":
        signing = nacl.signing.SigningKey(secret)
        verify = signing.verify_key

        def ed() -> object:
            return verify.verify(signing.sign(body))

        return {"bare nacl ed25519": ed}
    nonce = os.urandom(24)

    def box() -> object:
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, None, nonce, secret)
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, None, nonce, secret)

    return {"bare nacl aead": box}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args()
    repeats, target = (3, 0.05) if args.quick else (9, 0.2)
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{repeats} repeats of ~{target:.2f} s each, best kept\n")
    print(f"{'scheme':<12} {'payload':<12} {'contender':<20} {'us/op':>9} {'envelope/bare':>14}")
    for scheme in ("hmac-sha256", "blake2b", "ed25519", "secretbox"):
        for label, body in PAYLOADS.items():
            contenders = {"envelope": _envelope(scheme, body), **_bare(scheme, body)}
            best = measure(contenders, repeats, target)
            for name, seconds in best.items():
                ratio = "" if name == "envelope" else f"{best['envelope'] / seconds:.2f}x"
                print(f"{scheme:<12} {label:<12} {name:<20} {seconds * 1e6:>9.2f} {ratio:>14}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
