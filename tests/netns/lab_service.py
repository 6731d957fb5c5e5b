"""The service that the lab's nodes serve by default (``lab_service:LabService`` as ``lab``;
the lab puts this directory on ``PYTHONPATH``). The lab tells it who it is through
``CLUSTERRPC_LAB_NODE``, ``CLUSTERRPC_LAB_HOST`` and ``CLUSTERRPC_LAB_ADDRESS``."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from clusterrpc import current_call, oneway, remote


class LabService:
    """Who a node is, and a few things a multi-host test needs to observe."""

    def __init__(self) -> None:
        self._notes: list[str] = []

    @remote
    def status(self) -> dict[str, Any]:
        """Return this node's name, host, lab address and process id."""
        return {"node": os.environ.get("CLUSTERRPC_LAB_NODE", ""),
                "host": os.environ.get("CLUSTERRPC_LAB_HOST", ""),
                "address": os.environ.get("CLUSTERRPC_LAB_ADDRESS", ""),
                "pid": os.getpid()}

    @remote
    def echo(self, value: Any) -> Any:
        """Return value unchanged."""
        return value

    @remote
    def caller(self) -> dict[str, Any]:
        """Return who called, over which transport and from where."""
        call = current_call()
        return {"node": call.node, "transport": call.transport, "peer": call.peer}

    @remote
    async def sleep(self, seconds: float) -> bool:
        """Wait that many seconds (at most 10), then return true."""
        await asyncio.sleep(min(max(seconds, 0.0), 10.0))
        return True

    @oneway
    def note(self, text: str) -> None:
        """Remember text (one-way: no answer); see notes()."""
        self._notes.append(text)

    @remote
    def notes(self) -> list[str]:
        """Return the texts note() received, oldest first."""
        return list(self._notes)
