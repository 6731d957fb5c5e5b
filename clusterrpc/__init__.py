"""clusterrpc: RPC for the messages that hold a cluster together.

XML-RPC wire formats extended for clusters: normal, one-way and multicast calls, signed packets,
pluggable codecs and a local client-server API. See ``README.md`` and ``spec/``.

The names exported here are the public contract; everything else lives in subpackages
(:mod:`clusterrpc.codecs`, :mod:`clusterrpc.values`, :mod:`clusterrpc.errors`, the packet layer
in :mod:`clusterrpc.packet`, :mod:`clusterrpc.envelope`, :mod:`clusterrpc.replay` and
:mod:`clusterrpc.auth`). :mod:`clusterrpc.testing` has tools for testing components built on
clusterrpc: an in-memory datagram network with fault injection.
"""

import importlib
from typing import TYPE_CHECKING, Any

from clusterrpc.errors import (
    AuthenticationError,
    BadAuthenticatorError,
    CallCancelledError,
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
    HTTPError,
    InsecurePacketError,
    KeyringError,
    LimitExceededError,
    LocalAccessError,
    PacketError,
    ReplayError,
    StaleEpochError,
    TooManyCallsError,
    TooOldError,
    TransportError,
    UnknownCodecError,
    UnknownKeyError,
    UnknownSchemeError,
    UnknownSenderError,
    WrongClusterError,
)
from clusterrpc.keyring import Keyring
from clusterrpc.rpc import CallContext, current_call, oneway, remote
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

if TYPE_CHECKING:
    from clusterrpc.client import Client, GroupClient, connect, connect_group
    from clusterrpc.config import NodeConfig
    from clusterrpc.node import Group, GroupPeer, Node, Peer
    from clusterrpc.rpc.gather import GroupReplies

__version__ = "0.1.0"

# The I/O layers load on first use (PEP 562), so that importing the sans-I/O layers
# (codecs, packets, the RPC protocol) never pulls in asyncio or sockets.
_LAZY = {"Node": "clusterrpc.node", "Peer": "clusterrpc.node", "Group": "clusterrpc.node",
         "GroupPeer": "clusterrpc.node", "GroupReplies": "clusterrpc.rpc.gather",
         "Client": "clusterrpc.client", "connect": "clusterrpc.client",
         "GroupClient": "clusterrpc.client", "connect_group": "clusterrpc.client",
         "NodeConfig": "clusterrpc.config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clusterrpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_LIMITS",
    "AuthenticationError",
    "BadAuthenticatorError",
    "CallCancelledError",
    "CallContext",
    "CallTimeoutError",
    "Client",
    "ClusterRPCError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "Fault",
    "FaultCode",
    "Group",
    "GroupClient",
    "GroupPeer",
    "GroupReplies",
    "HTTPError",
    "InsecurePacketError",
    "Keyring",
    "KeyringError",
    "LimitExceededError",
    "Limits",
    "LocalAccessError",
    "Node",
    "NodeConfig",
    "PacketError",
    "Peer",
    "ReplayError",
    "StaleEpochError",
    "TooManyCallsError",
    "TooOldError",
    "TransportError",
    "UnknownCodecError",
    "UnknownKeyError",
    "UnknownSchemeError",
    "UnknownSenderError",
    "Value",
    "WrongClusterError",
    "__version__",
    "connect",
    "connect_group",
    "current_call",
    "oneway",
    "remote",
]
