"""clusterrpc: RPC for the messages that hold a cluster together.

XML-RPC wire formats extended for clusters: normal, one-way and multicast calls, signed packets,
pluggable codecs and a local client-server API. See ``README.md`` and ``spec/``.

The names exported here are the public contract; everything else lives in subpackages
(:mod:`clusterrpc.codecs`, :mod:`clusterrpc.values`, :mod:`clusterrpc.errors`).
"""

from clusterrpc.errors import (
    ClusterRPCError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
    LimitExceededError,
    UnknownCodecError,
)
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "ClusterRPCError",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "Fault",
    "FaultCode",
    "LimitExceededError",
    "Limits",
    "UnknownCodecError",
    "Value",
    "__version__",
]
