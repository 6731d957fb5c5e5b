"""Regenerate ``spec/vectors/local/`` (run from the repository root).

    python tools/make_local_vectors.py

Local connections use the ``none`` scheme, so every frame is deterministic: the inputs of each
case (sender, epoch, clock, call id, timeout, method, parameters) are in ``cases.json`` and the
frames come out byte-identical on every run. ``tests/test_local_vectors.py`` rebuilds each
frame from those inputs and opens it as a server would. Review the diff before committing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from clusterrpc.cli.notation import from_notation
from clusterrpc.codecs import CallMessage
from clusterrpc.rpc.protocol import Messenger

OUT = Path("spec/vectors/local")
CLUSTER = "ORG/UK/EDIN"
NOW = 1_800_000_000.0
CLIENT = "local:4242:1.1"
CLIENT_EPOCH = 1_799_999_000_000_000
SERVER = "n1"
SERVER_EPOCH = 1_799_998_000_000_000

CASES: list[dict[str, Any]] = [
    {"name": "hello", "file": "hello-call.frame", "kind": "call", "sender": CLIENT,
     "epoch": CLIENT_EPOCH, "call_id": 1, "timeout": 30.0, "method": "local.hello",
     "params": [{"version": 1, "recovery_ok": False}],
     "note": "the first call on every connection (spec/local.md, Handshake)"},
    {"name": "hello-answer", "file": "hello-reply.frame", "kind": "reply", "sender": SERVER,
     "epoch": SERVER_EPOCH, "call_id": 1,
     "value": {"version": 1, "node": SERVER, "cluster": CLUSTER, "service": "locks",
               "domain": "USER", "uid": 1000, "gid": 1000, "pid": 4242, "sequence": 0},
     "note": "the server's answer, with the credentials it read from SO_PEERCRED"},
    {"name": "acquire-with-keywords", "file": "acquire-call.frame", "kind": "call",
     "sender": CLIENT, "epoch": CLIENT_EPOCH, "call_id": 2, "timeout": 30.0,
     "method": "locks.acquire", "params": ["disk1", {"clusterrpc.keywords": {"notify": 7}}],
     "note": "handle.locks.acquire('disk1', notify=7): keywords as a trailing struct"},
    {"name": "event", "file": "event-call.frame", "kind": "oneway", "sender": SERVER,
     "epoch": SERVER_EPOCH, "call_id": 1, "timeout": None, "method": "local.event",
     "params": [7, {"lock": "disk1", "wanted_by": 4343}, 1],
     "note": "client.notify(7, payload): a one-way call local.event(cookie, payload, sequence)"},
]


def frame(case: dict[str, Any]) -> bytes:
    """The length-prefixed frame of ``case``, sealed as the first packet of its sender."""
    messenger = Messenger(node=case["sender"], cluster=CLUSTER, keyring=None, insecure=True,
                          epoch=case["epoch"], clock=lambda: NOW)
    if case["kind"] == "reply":
        packet = messenger.seal_answer(case["call_id"], messenger.codec.codec_id,
                                       from_notation(case["value"]))
    else:
        message = CallMessage(case["method"], from_notation(case["params"]))
        packet = messenger.seal_call(case["call_id"], message, oneway=case["kind"] == "oneway",
                                     timeout=case["timeout"])
    return struct.pack(">I", len(packet)) + packet


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (OUT / case["file"]).write_bytes(frame(case))
    manifest = {"cluster": CLUSTER, "now": NOW, "cases": CASES}
    (OUT / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
