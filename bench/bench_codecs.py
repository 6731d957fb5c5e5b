"""Codec benchmark: encode+decode of representative payloads, side by side with the standard
library's ``xmlrpc.client.dumps``/``loads`` on the same payloads, in one run.

Run from the repository root after installing clusterrpc::

    python bench/bench_codecs.py            # about a minute
    python bench/bench_codecs.py --quick    # a few seconds, rougher figures

Method: for each payload and each contender, one "operation" is encoding the call and decoding
the bytes back (the standard library: ``dumps(params, method, allow_none=True)`` then
``loads(body, use_builtin_types=True)``, which yields the same Python types as ours). Each figure
is the best of several repeats of a timed loop (timeit's advice: the minimum is the least
disturbed by other work on a shared machine); contenders are interleaved repeat by repeat so that
a burst of outside load hits all of them. The ratio is stdlib time / our time: above 1 is faster.
"""

from __future__ import annotations

import argparse
import platform
import sys
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from _timing import measure

from clusterrpc.codecs import default_registry

PAYLOADS: dict[str, tuple[str, list[Any]]] = {
    "small call (election vote)": (
        "election.vote",
        [{"term": 42, "candidate": "node-17", "last_log_index": 1_234_567,
          "last_log_term": 41, "granted": True}],
    ),
    "1,000-element array of structs": (
        "membership.update",
        [[{"name": f"node-{i}", "address": f"127.0.{i // 256}.{i % 256}", "port": 7400 + i,
           "up": i % 3 != 0, "load": i / 7.0} for i in range(1000)]],
    ),
    "64 KiB base64 blob": ("store.put", [bytes(range(256)) * 256]),
}


def _stdlib(method: str, params: list[Any]) -> Callable[[], object]:
    args = tuple(params)

    def run() -> object:
        body = xmlrpc.client.dumps(args, method, allow_none=True)
        return xmlrpc.client.loads(body, use_builtin_types=True)

    return run


def _ours(codec_name: str, method: str, params: list[Any]) -> Callable[[], object]:
    codec = default_registry().create(codec_name)
    encode, decode = codec.encode_call, codec.decode_call

    def run() -> object:
        return decode(encode(method, params))

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--codec", action="append", help="only these codecs (repeatable)")
    args = parser.parse_args()
    repeats, target = (3, 0.05) if args.quick else (9, 0.2)
    names = args.codec or [n for n in ("xmlrpc", "compact", "json")
                           if n in default_registry()]

    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{repeats} repeats of ~{target:.2f} s each, best kept\n")
    print(f"{'payload':<32} {'contender':<16} {'us/op':>10} {'vs stdlib':>10}")
    for label, (method, params) in PAYLOADS.items():
        # Every contender must give back what went in, or the comparison is meaningless.
        reference = xmlrpc.client.loads(
            xmlrpc.client.dumps(tuple(params), method, allow_none=True), use_builtin_types=True
        )[0]
        contenders = {"stdlib xmlrpc": _stdlib(method, params)}
        for name in names:
            decoded = default_registry().create(name).decode_call(
                default_registry().create(name).encode_call(method, params))
            if list(decoded.params) != list(reference):
                print(f"{name} does not round-trip {label}", file=sys.stderr)
                return 1
            contenders[name] = _ours(name, method, params)
        best = measure(contenders, repeats, target)
        base = best["stdlib xmlrpc"]
        for contender, seconds in best.items():
            ratio = "1.00x" if contender == "stdlib xmlrpc" else f"{base / seconds:.2f}x"
            print(f"{label:<32} {contender:<16} {seconds * 1e6:>10.1f} {ratio:>10}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
