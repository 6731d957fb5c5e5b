"""Transports: where packets meet sockets. Only this package touches the network, and it is
where ``OSError`` becomes :class:`~clusterrpc.errors.TransportError`.

* :mod:`~clusterrpc.transports.addresses` — endpoint URLs;
* :mod:`~clusterrpc.transports.base` — the channel contract every client transport keeps;
* :mod:`~clusterrpc.transports.engine` — sealing/opening packets and serving calls, shared by
  the packet transports (``spec/rpc.md``);
* :mod:`~clusterrpc.transports.streams` — TCP and Unix-stream servers and channels;
* :mod:`~clusterrpc.transports.datagrams` — UDP;
* :mod:`~clusterrpc.transports.http` — standard XML-RPC over HTTP (h11), loaded on use.
"""

from clusterrpc.transports.addresses import SCHEMES, Address, parse_address

__all__ = ["SCHEMES", "Address", "parse_address"]
