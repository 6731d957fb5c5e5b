"""The ``node`` service: what a node says about itself to its admins (``clusterrpc status``).

Every :class:`~clusterrpc.Node` publishes a :class:`NodeAdmin` as the service ``node``
(:meth:`NodeAdmin.publish`), so ``node.status()`` answers on every transport the node listens
on, behind the same authentication as any other method::

    clusterrpc status tcp://127.0.0.1:7400 -k cluster.keys
    clusterrpc call tcp://127.0.0.1:7400 node.status -k cluster.keys --json

``node.status()`` answers one struct (every key always present, ``nil`` where a part does not
run)::

    {"name": "n1", "cluster": "ORG/UK/EDIN", "version": "0.1.0", "pid": 4242,
     "started": <datetime, UTC>, "uptime": 12.5, "addresses": ["udp://127.0.0.1:7400"],
     "counters": {"accepted": 10, "calls": 3, ...},
     "members": {"service": "membership", "count": 3, "states": {"alive": 2, "dead": 1},
                 "view": 5} | nil,
     "election": {"service": "election", "leader": "n2", "term": 4, "role": "follower"} | nil,
     "local": {"local_dir": "/run/…", "clients": 2, "services": ["locks", "system"]} | nil}

The membership and election parts come from the components' own admin methods
(``membership.members``/``membership.stats``, ``election.status``: what ``clusterrpc
members`` and ``clusterrpc leader`` show), looked up in the node's services and run in
process, so the answer is the same whichever way it is asked. The uptime is measured from the
node's epoch (its creation time, ``spec/packet.md``), read once against the wall clock when the
service is published and on the monotonic clock afterwards: a wall-clock step does not change
it. The core layers read no clock; this one does, at the boundary.
"""

from __future__ import annotations

import datetime as dt
import inspect
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from clusterrpc import __version__
from clusterrpc.rpc import remote

__all__ = ["SERVICE", "NodeAdmin"]

SERVICE = "node"
"""The service name under which every node publishes its :class:`NodeAdmin`."""

_ELECTION_METHODS = ("status", "transfer", "request_vote")


class NodeAdmin:
    """The ``node`` service of ``node`` (module docstring).

    ``membership`` and ``election`` name the services of those components to report on
    (default ``membership``; for the election, ``election`` or else any service with the
    election's methods, since ``[election] name`` may rename it). ``clock`` is the monotonic
    clock (seconds) and ``wall_clock`` the wall clock (seconds since the Unix epoch), read once
    here; tests pass their own.

    Raises nothing itself; ``node`` needs ``name``, ``cluster``, ``addresses``, ``counters``,
    ``services`` (a :class:`~clusterrpc.rpc.ServiceRegistry`), ``messenger.epoch`` and
    ``local`` as :class:`~clusterrpc.Node` has them.
    """

    def __init__(self, node: Any, *, membership: str = "membership",
                 election: str = "election",
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._node = node
        self._membership = membership
        self._election = election
        self._clock = clock
        epoch_seconds: float = node.messenger.epoch / 1_000_000
        self._started = dt.datetime.fromtimestamp(epoch_seconds, tz=dt.UTC)
        # The node's start on the monotonic clock: the wall clock is read this once.
        self._start: float = clock() - max(wall_clock() - epoch_seconds, 0.0)

    @classmethod
    def publish(cls, node: Any, **options: Any) -> NodeAdmin:
        """Serve a new :class:`NodeAdmin` of ``node`` as its ``node`` service (what every
        :class:`~clusterrpc.Node` does when it is created); ``options`` go to the constructor.
        Returns it. Raises :class:`~clusterrpc.errors.ConfigurationError` if ``node`` already
        serves a service named ``node``."""
        admin = cls(node, **options)
        node.serve(admin, name=SERVICE)
        return admin

    @property
    def uptime(self) -> float:
        """Seconds since the node was created (never negative)."""
        return max(self._clock() - self._start, 0.0)

    @remote
    async def status(self) -> dict[str, Any]:
        """This node at a glance: name, cluster, version, pid, started (UTC), uptime
        (seconds), addresses, counters, and summaries of its membership (member count by
        state), election (leader, term, role) and local API (clients connected) or nil for a
        part that does not run."""
        node = self._node
        return {
            "name": node.name,
            "cluster": node.cluster,
            "version": __version__,
            "pid": os.getpid(),
            "started": self._started,
            "uptime": round(self.uptime, 3),
            "addresses": list(node.addresses),
            "counters": dict(sorted(node.counters.items())),
            "members": await self._members(),
            "election": await self._election_status(),
            "local": self._local(),
        }

    # -- the parts -----------------------------------------------------------------------------

    def _find(self, service: str, method: str) -> Callable[..., Any] | None:
        found = self._node.services.find(f"{service}.{method}")
        return None if found is None else found.function

    def _service_with(self, preferred: str, methods: Sequence[str]) -> str | None:
        """``preferred`` if it has ``methods``, else the first service that has them all."""
        names: list[str] = self._node.services.names()
        candidates: list[str] = [preferred, *sorted({name.rpartition(".")[0] for name in names})]
        for service in candidates:
            if service and all(f"{service}.{method}" in names for method in methods):
                return service
        return None

    @staticmethod
    async def _run(function: Callable[..., Any]) -> Any:
        result = function()
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _members(self) -> dict[str, Any] | None:
        service = self._membership
        members = self._find(service, "members")
        if members is None:
            return None
        rows = await self._run(members)
        states: dict[str, int] = {}
        for row in rows if isinstance(rows, list) else []:
            state = str(row.get("state", "unknown")) if isinstance(row, dict) else "unknown"
            states[state] = states.get(state, 0) + 1
        summary: dict[str, Any] = {"service": service, "count": sum(states.values()),
                                   "states": dict(sorted(states.items())), "view": None}
        stats = self._find(service, "stats")
        if stats is not None:
            answer = await self._run(stats)
            if isinstance(answer, dict):
                summary["view"] = answer.get("view")
        return summary

    async def _election_status(self) -> dict[str, Any] | None:
        service = self._service_with(self._election, _ELECTION_METHODS)
        if service is None:
            return None
        status = self._find(service, "status")
        assert status is not None  # _service_with checked it
        answer = await self._run(status)
        if not isinstance(answer, dict):
            return None
        return {"service": service, "leader": answer.get("leader"),
                "term": answer.get("term"), "role": answer.get("role")}

    def _local(self) -> dict[str, Any] | None:
        local = self._node.local
        if local is None:
            return None
        services = sorted({service for service, _domain in local.paths})
        return {"local_dir": local.local_dir, "clients": len(local.clients),
                "services": services}
