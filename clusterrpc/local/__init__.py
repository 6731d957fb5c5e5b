"""The local client-server API: local programs reach a node's services over Unix sockets whose
paths name the cluster, the service and the security domain (``spec/local.md``)::

    from clusterrpc import local
    with local.get_cluster_handle("ORG/UK/EDIN", domain="USER") as handle:
        cookie = handle.events.register(on_lock_wanted)
        handle.locks.acquire("disk1", notify=cookie)

Server side, ``node.serve_local(obj, name="locks")``; inside a method ``current_call()`` gives
the caller's kernel-verified ``uid``/``gid``/``groups``/``pid``, its ``domain`` and its
:class:`~clusterrpc.local.server.LocalClient`.
"""

from __future__ import annotations

from clusterrpc.local.handle import (
    AsyncClusterHandle,
    ClusterHandle,
    Events,
    get_cluster_handle,
    open_cluster_handle,
)
from clusterrpc.local.paths import SYSTEM, USER, check_cluster_name, socket_path
from clusterrpc.local.protocol import LocalEvent

__all__ = [
    "SYSTEM",
    "USER",
    "AsyncClusterHandle",
    "ClusterHandle",
    "Events",
    "LocalEvent",
    "check_cluster_name",
    "get_cluster_handle",
    "open_cluster_handle",
    "socket_path",
]
