"""Transports: where packets meet sockets. Only this package touches the network, and it is
where ``OSError`` becomes :class:`~clusterrpc.errors.TransportError`, in one module.

* :mod:`~clusterrpc.transports.addresses` — endpoint URLs;
* :mod:`~clusterrpc.transports.base` — the channel contract every client transport keeps;
* :mod:`~clusterrpc.transports.errors` — the translation of ``OSError`` (one table per kind of
  operation);
* :mod:`~clusterrpc.transports.engine` — the asyncio driver of the connection protocol
  (:mod:`clusterrpc.rpc.protocol`), shared by the packet transports (``spec/rpc.md``);
* :mod:`~clusterrpc.transports.streams` — TCP and Unix-stream servers and channels;
* :mod:`~clusterrpc.transports.datagrams` — UDP;
* :mod:`~clusterrpc.transports.multicast` — group calls (IP multicast and fan-out);
* :mod:`~clusterrpc.transports.http` — standard XML-RPC over HTTP (h11), loaded on use;
* :mod:`~clusterrpc.transports.local` — the local API's Unix sockets (credentials, fds);
* :mod:`~clusterrpc.transports.systemd` — readiness and watchdog notification, socket
  activation (``spec/systemd.md``), loaded on use.
"""

from clusterrpc.transports.addresses import SCHEMES, Address, parse_address

__all__ = ["SCHEMES", "Address", "parse_address"]
