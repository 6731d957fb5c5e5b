"""clusterrpc: RPC for the messages that hold a cluster together.

XML-RPC wire formats extended for clusters: normal, one-way and multicast calls, signed packets,
pluggable codecs and a local client-server API. See ``README.md`` and ``spec/``.

The names exported here are the public contract; everything else lives in subpackages
(:mod:`clusterrpc.codecs`, :mod:`clusterrpc.values`, :mod:`clusterrpc.errors`, the packet layer
in :mod:`clusterrpc.packet`, :mod:`clusterrpc.envelope`, :mod:`clusterrpc.replay` and
:mod:`clusterrpc.auth`).
"""

from clusterrpc.errors import (
    AuthenticationError,
    BadAuthenticatorError,
    CallCancelledError,
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
    InsecurePacketError,
    KeyringError,
    LimitExceededError,
    PacketError,
    ReplayError,
    StaleEpochError,
    TooManyCallsError,
    TooOldError,
    UnknownCodecError,
    UnknownKeyError,
    UnknownSchemeError,
    UnknownSenderError,
    WrongClusterError,
)
from clusterrpc.keyring import Keyring
from clusterrpc.rpc import CallContext, current_call, oneway, remote
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "AuthenticationError",
    "BadAuthenticatorError",
    "CallCancelledError",
    "CallContext",
    "CallTimeoutError",
    "ClusterRPCError",
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "Fault",
    "FaultCode",
    "InsecurePacketError",
    "Keyring",
    "KeyringError",
    "LimitExceededError",
    "Limits",
    "PacketError",
    "ReplayError",
    "StaleEpochError",
    "TooManyCallsError",
    "TooOldError",
    "UnknownCodecError",
    "UnknownKeyError",
    "UnknownSchemeError",
    "UnknownSenderError",
    "Value",
    "WrongClusterError",
    "__version__",
    "current_call",
    "oneway",
    "remote",
]
