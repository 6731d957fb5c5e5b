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

A second table times each codec operation alone on the messages a cluster sends most: the
election-vote call of ``clusterrpc codecs`` (``SAMPLE_VOTE``, nine fields of every scalar type,
822 bytes of XML-RPC), the same struct as a reply, a three-field reply and a fault. For the XML
codecs (``xmlrpc``, ``compact``) it also times decoding by the tree path alone ("…, tree"): what
every message cost before their fast paths, and what a document outside a fast path's subset
(comments, CR, other encodings…) still costs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from _timing import measure

from clusterrpc.cli.main import SAMPLE_VOTE
from clusterrpc.codecs import Codec, default_registry
from clusterrpc.codecs.compact import CompactCodec
from clusterrpc.codecs.xmlrpc import XmlRpcCodec

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


SMALL_REPLY = {"granted": True, "term": 42, "voter": "node-3"}
FAULT = (-32601, "method 'election.bogus' not found")


def _operations(codec: Codec) -> dict[str, Callable[[], object]]:
    """Each codec operation alone, on cluster-sized messages."""
    call = codec.encode_call("election.vote", [SAMPLE_VOTE])
    vote_reply = codec.encode_reply(SAMPLE_VOTE)
    small_reply = codec.encode_reply(SMALL_REPLY)
    fault = codec.encode_fault(*FAULT)
    return {
        "encode_call(vote)": lambda: codec.encode_call("election.vote", [SAMPLE_VOTE]),
        "decode_call(vote)": lambda: codec.decode_call(call),
        "encode_reply(vote)": lambda: codec.encode_reply(SAMPLE_VOTE),
        "decode_response(vote)": lambda: codec.decode_response(vote_reply),
        "encode_reply(3 fields)": lambda: codec.encode_reply(SMALL_REPLY),
        "decode_response(3 fields)": lambda: codec.decode_response(small_reply),
        "encode_fault": lambda: codec.encode_fault(*FAULT),
        "decode_response(fault)": lambda: codec.decode_response(fault),
    }


def _tree_path(codec: XmlRpcCodec | CompactCodec) -> dict[str, Callable[[], object]]:
    """An XML codec's decoders by the tree path alone (a private switch, for this comparison)."""
    call = codec.encode_call("election.vote", [SAMPLE_VOTE])
    vote_reply = codec.encode_reply(SAMPLE_VOTE)
    small_reply = codec.encode_reply(SMALL_REPLY)
    fault = codec.encode_fault(*FAULT)
    return {
        "decode_call(vote)": lambda: codec._decode_call_safe(call),
        "decode_response(vote)": lambda: codec._decode_response_safe(vote_reply),
        "decode_response(3 fields)": lambda: codec._decode_response_safe(small_reply),
        "decode_response(fault)": lambda: codec._decode_response_safe(fault),
    }


def _stdlib_operations() -> dict[str, Callable[[], object]]:
    call = xmlrpc.client.dumps((SAMPLE_VOTE,), "election.vote", allow_none=True)
    vote_reply = xmlrpc.client.dumps((SAMPLE_VOTE,), methodresponse=True, allow_none=True)
    small_reply = xmlrpc.client.dumps((SMALL_REPLY,), methodresponse=True)
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(*FAULT), methodresponse=True)

    def load_fault() -> object:
        try:
            return xmlrpc.client.loads(fault)
        except xmlrpc.client.Fault as error:
            return error

    return {
        "encode_call(vote)": lambda: xmlrpc.client.dumps(
            (SAMPLE_VOTE,), "election.vote", allow_none=True),
        "decode_call(vote)": lambda: xmlrpc.client.loads(call, use_builtin_types=True),
        "encode_reply(vote)": lambda: xmlrpc.client.dumps(
            (SAMPLE_VOTE,), methodresponse=True, allow_none=True),
        "decode_response(vote)": lambda: xmlrpc.client.loads(vote_reply, use_builtin_types=True),
        "encode_reply(3 fields)": lambda: xmlrpc.client.dumps(
            (SMALL_REPLY,), methodresponse=True),
        "decode_response(3 fields)": lambda: xmlrpc.client.loads(small_reply),
        "encode_fault": lambda: xmlrpc.client.dumps(
            xmlrpc.client.Fault(*FAULT), methodresponse=True),
        "decode_response(fault)": load_fault,
    }


def _operations_table(names: list[str], repeats: int, target: float) -> None:
    """Per-operation microseconds, one column per contender."""
    columns: dict[str, dict[str, Callable[[], object]]] = {}
    for name in names:
        codec = default_registry().create(name)
        columns[name] = _operations(codec)
        if isinstance(codec, XmlRpcCodec | CompactCodec):
            columns[f"{name}, tree"] = _tree_path(codec)
    columns["stdlib xmlrpc*"] = _stdlib_operations()
    contenders = {
        (column, operation): run
        for column, runs in columns.items()
        for operation, run in runs.items()
    }
    best = measure(contenders, repeats, target)
    operations = list(_operations(default_registry().create(names[0])))
    print(f"{'operation, us':<26}" + "".join(f"{column:>15}" for column in columns))
    for operation in operations:
        cells = [
            f"{best[column, operation] * 1e6:>15.1f}" if (column, operation) in best
            else f"{'-':>15}"
            for column in columns
        ]
        print(f"{operation:<26}" + "".join(cells))
    print("\n* xmlrpc.client.dumps/loads of the same values (it writes the vote's datetime "
          "without its microseconds and time zone).")


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
    _operations_table(names, repeats, target / 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
