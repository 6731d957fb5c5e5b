"""Many blocking calls from one process, for :meth:`tests.netns.lab.Lab.calls`.

Reads ``{"keyring": FILE, "timeout": SECONDS, "calls": [[URL, METHOD, [PARAMS...]], ...]}`` as
JSON on standard input, makes every call at once (a thread and a client each) and writes one
``{"status", "value", "error"}`` per call as a JSON list on standard output, where ``status`` is
the exit status ``clusterrpc call`` would give (0 ok, 1 fault, 3 transport error, 4 timeout).
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clusterrpc import connect
from clusterrpc.cli.exits import status_of
from clusterrpc.cli.notation import to_notation
from clusterrpc.keyring import Keyring

MAX_THREADS = 32
UNEXPECTED = 99
"""The status of an exception that ``clusterrpc call`` would not turn into an exit status."""


def main() -> int:
    request = json.load(sys.stdin)
    keyring = Keyring.load(request["keyring"])
    timeout = float(request["timeout"])

    def one(call: list[Any]) -> dict[str, Any]:
        url, method, params = call
        try:
            with connect(url, keyring=keyring, timeout=timeout) as client:
                value = client.call(method, *params)
        except Exception as error:
            try:
                status, message = status_of(error)
            except Exception:  # not a clusterrpc error: a bug to see, not an exit status
                status, message = UNEXPECTED, f"{type(error).__name__}: {error}"
            return {"status": status, "value": None, "error": message}
        return {"status": 0, "value": to_notation(value), "error": None}

    calls = request["calls"]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_THREADS, len(calls)))) as pool:
        answers = list(pool.map(one, calls))
    json.dump(answers, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
