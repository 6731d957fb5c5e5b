"""The RPC layer (sans-I/O): decorators, the registry of served methods, dispatch,
introspection, multicall, the call context, the client side's call tracking, and the connection
protocol every transport drives (:mod:`clusterrpc.rpc.protocol`).

Transports (asyncio) drive these objects; nothing here opens a socket or reads a clock.
"""

from clusterrpc.rpc.calls import (
    CallFailed,
    CallOutcome,
    CallSucceeded,
    CallTracker,
    OutgoingCall,
)
from clusterrpc.rpc.context import CallContext, current_call
from clusterrpc.rpc.decorators import oneway, remote
from clusterrpc.rpc.service import Method, ServiceRegistry

__all__ = [
    "CallContext",
    "CallFailed",
    "CallOutcome",
    "CallSucceeded",
    "CallTracker",
    "Method",
    "OutgoingCall",
    "ServiceRegistry",
    "current_call",
    "oneway",
    "remote",
]
