"""Transports: where packets meet sockets. Only this package touches the network.

So far: :mod:`clusterrpc.transports.addresses` (endpoint URLs). The asyncio TCP, Unix-stream,
UDP and HTTP transports build on it.
"""

from clusterrpc.transports.addresses import SCHEMES, Address, parse_address

__all__ = ["SCHEMES", "Address", "parse_address"]
