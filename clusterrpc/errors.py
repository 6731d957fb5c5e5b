"""The clusterrpc exception tree.

Every error that clusterrpc raises on purpose is a :class:`ClusterRPCError`. The tree keeps two
distinctions that callers act on:

* *local* errors (you asked for something that cannot be done: a value the wire cannot carry,
  a bad configuration) versus *remote* errors (bytes that came in are malformed, hostile or
  over a limit);
* a :class:`Fault`, which is a well-formed answer from the remote method ("the call failed
  there"), versus everything else ("the call could not be carried out").

::

    ClusterRPCError
    ├── Fault                      the remote method answered with a fault (code, message)
    │   └── StaleTermError         a @fenced method refused a term older than its newest
    ├── ConfigurationError         bad keyword configuration or plugin set-up   (ValueError)
    │   ├── ConfigProblemsError    a configuration breaks its plugin's metadata (.problems)
    │   ├── UnknownCodecError      no codec with that name or wire id          (LookupError)
    │   ├── UnknownSchemeError     no authentication scheme with that name/id  (LookupError)
    │   └── KeyringError           a keyring file is missing, malformed or too open
    ├── EncodeError                a local value cannot be put on the wire      (ValueError)
    ├── DecodeError                incoming bytes are malformed or unsafe       (ValueError)
    │   └── LimitExceededError     incoming bytes exceed a configured limit
    ├── CallTimeoutError           no reply before the call's deadline          (TimeoutError)
    ├── CallCancelledError         the caller cancelled the call before its reply
    ├── TooManyCallsError          a call started with every in-flight slot taken (yours)
    ├── LocalAccessError           the local API refused access: domain, recovery flag,
    │                              server uid, socket directory     (PermissionError)
    ├── ElectionError              leader election could not do what was asked
    │   ├── NotLeaderError         this node is not the leader (transfer, lease)
    │   ├── NoLeaderError          no leader became known before the timeout (TimeoutError)
    │   └── TransferError          leadership did not move to another voter in time
    ├── TransportError             the call could not be carried to or from the peer
    │   ├── ConnectError           connecting failed (refused, unreachable, no such socket)
    │   ├── ConnectionLostError    the peer closed or broke the connection mid-call
    │   ├── ConnectionClosedError  you closed the client or node (or it is not started)
    │   └── HTTPError              an HTTP endpoint answered with an HTTP error status
    └── AuthenticationError        an incoming packet was refused: never act on it
        ├── PacketError            truncated, oversized or malformed packet or frame
        ├── WrongClusterError      the packet names another cluster
        ├── UnknownKeyError        no key with that id and scheme in the keyring
        ├── UnknownSenderError     no trusted public key for the sender (ed25519)
        ├── InsecurePacketError    an unauthenticated packet where none is allowed
        ├── BadAuthenticatorError  the MAC, signature or ciphertext does not verify
        ├── ReplayError            a sequence number already seen (a replay)
        │   └── TooOldError        a sequence number behind the replay window
        └── StaleEpochError        an old epoch, or a new epoch with a stale timestamp

Every ``AuthenticationError`` subclass names, in ``counter``, the counter that the packet layer
increments when it refuses a packet that way (``clusterrpc.envelope.PacketCounters``).
``TransportError`` is where operating-system errors (``OSError``: refused connections, resets,
missing socket files) are translated, at the transport boundary and nowhere else (one module:
``clusterrpc.transports.errors``); the original ``OSError`` is the ``__cause__``. A call that
failed with ``ConnectionLostError`` may or may not have run on the server, like a timed-out
one.

Fault codes follow the XML-RPC fault-interoperability specification; see :class:`FaultCode`
and ``spec/codecs.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadAuthenticatorError",
    "CallCancelledError",
    "CallTimeoutError",
    "ClusterRPCError",
    "ConfigProblemsError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "DecodeError",
    "ElectionError",
    "EncodeError",
    "Fault",
    "FaultCode",
    "HTTPError",
    "InsecurePacketError",
    "KeyringError",
    "LimitExceededError",
    "LocalAccessError",
    "NoLeaderError",
    "NotLeaderError",
    "PacketError",
    "ReplayError",
    "StaleEpochError",
    "StaleTermError",
    "TooManyCallsError",
    "TooOldError",
    "TransferError",
    "TransportError",
    "UnknownCodecError",
    "UnknownKeyError",
    "UnknownSchemeError",
    "UnknownSenderError",
    "WrongClusterError",
]


class FaultCode(enum.IntEnum):
    """Fault codes of the XML-RPC fault-interoperability specification.

    Application code may use any other integer for its own faults; these are the codes that
    clusterrpc itself produces.
    """

    PARSE_ERROR = -32700
    """The request was not well-formed (or not safe to parse)."""
    UNSUPPORTED_ENCODING = -32701
    """The request used a character encoding the server does not accept."""
    INVALID_CHARACTER = -32702
    """The request contained a character that is invalid for its encoding."""
    INVALID_REQUEST = -32600
    """Well-formed, but not a valid XML-RPC request."""
    METHOD_NOT_FOUND = -32601
    """No such method is published."""
    INVALID_PARAMS = -32602
    """Wrong number or types of parameters."""
    INTERNAL_ERROR = -32603
    """The server failed while handling a valid request."""
    APPLICATION_ERROR = -32500
    """The method itself raised an exception."""
    STALE_TERM = -32010
    """A :func:`~clusterrpc.components.election.fenced` method refused the call: the fencing
    token (election term) it carried is older than the newest the service has seen. (In the
    range the fault-interoperability specification leaves to implementations.)"""
    INVALID_CONFIG = -32020
    """A plugin configuration was refused by the plugin's metadata (``spec/metadata.md``); the
    fault string lists every problem, one per line, with its field path."""
    FORBIDDEN = -32021
    """The method refused the caller: a credential it needs (a plugin's token) is missing or
    wrong."""
    SYSTEM_ERROR = -32400
    """An error of the server's system, outside the method."""
    TRANSPORT_ERROR = -32300
    """An error of the transport below the RPC layer."""


class ClusterRPCError(Exception):
    """Base class of every error that clusterrpc raises on purpose."""


class Fault(ClusterRPCError):
    """The remote method answered with a fault.

    ``code`` is an integer (see :class:`FaultCode` for the codes clusterrpc produces) and
    ``message`` a human-readable string. Raising a ``Fault`` inside a served method sends exactly
    that code and message back to the caller.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = int(code)
        self.message = str(message)

    def __str__(self) -> str:
        return f"fault {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"Fault({self.code!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fault):
            return NotImplemented
        return (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class StaleTermError(Fault):
    """Raised inside a :func:`~clusterrpc.components.election.fenced` method when the call
    carries a term older than the newest that the service has seen: the caller was a leader
    once but is not any more (a paused old leader must not act). The caller receives a
    :class:`Fault` with code :attr:`FaultCode.STALE_TERM`; ``term`` and ``newest`` are the two
    terms (on the server side)."""

    def __init__(self, term: int, newest: int) -> None:
        super().__init__(FaultCode.STALE_TERM,
                         f"stale term {term}: this service has seen term {newest}")
        self.term = term
        self.newest = newest


class ConfigurationError(ClusterRPCError, ValueError):
    """A keyword argument, configuration file or plugin is invalid.

    Raised when objects are constructed, plugins are loaded, or a call is given a bad option
    (e.g. a negative ``timeout``); never for bytes that arrive.
    """


class ConfigProblemsError(ConfigurationError):
    """A configuration was checked against a plugin's metadata and has problems
    (``spec/metadata.md``): ``problems`` lists every one — each a
    :class:`clusterrpc.metadata.ConfigProblem` with its field path, what was expected and the
    offending value (masked for a secret) — and the message shows them one per line.
    ``where`` (a file name, say) prefixes the message."""

    def __init__(self, problems: Sequence[Any], *, where: str = "") -> None:
        self.problems = list(problems)
        self.where = where
        head = f"{where}: " if where else ""
        lines = [f"  {problem.path}: {problem.message} (expected {problem.expected}, got "
                 f"{problem.value})" for problem in self.problems]
        super().__init__(f"{head}{len(self.problems)} configuration problem(s):\n"
                         + "\n".join(lines))


class UnknownCodecError(ConfigurationError, LookupError):
    """No codec is registered under the requested name or wire id."""


class EncodeError(ClusterRPCError, ValueError):
    """A value cannot be represented on the wire.

    ``path`` names the offending place inside the message, e.g. ``params[0]["peers"][3]``; it is
    part of the message too. Nothing has been sent when this is raised.
    """

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)

    def at(self, path: str) -> EncodeError:
        """Return a copy of this error located at ``path`` (used while unwinding)."""
        error = type(self)(self.reason, path)
        error.__cause__ = self.__cause__
        return error


class DecodeError(ClusterRPCError, ValueError):
    """Bytes that arrived are not a valid message for the codec.

    This covers malformed input, hostile input (DTDs, entity declarations, external
    references) and, through :class:`LimitExceededError`, input over a configured limit. The
    caller must treat the message as never received; a server answers with a
    ``PARSE_ERROR``/``INVALID_REQUEST`` fault where a reply is possible.
    """

    def __init__(self, reason: str, *, fault_code: int = FaultCode.PARSE_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fault_code = fault_code
        """The fault code a server answers with: ``PARSE_ERROR`` for bytes that are not
        well-formed, ``INVALID_REQUEST`` for a well-formed document that is not a valid message."""


class LimitExceededError(DecodeError):
    """Incoming bytes exceed a configured limit (size, depth, item count, string length)."""


class UnknownSchemeError(ConfigurationError, LookupError):
    """No authentication scheme is registered under the requested name or wire id."""


class KeyringError(ConfigurationError):
    """A keyring file is missing, malformed, or readable by group or others while it holds
    secrets (as ssh refuses such private keys). The message says how to fix it; it never
    contains key material."""


class CallTimeoutError(ClusterRPCError, TimeoutError):
    """No reply arrived before the call's deadline. The call may still have run on the server:
    a timed-out call has an unknown outcome, and a late reply is discarded."""


class CallCancelledError(ClusterRPCError):
    """The caller cancelled the call before its reply arrived; a late reply is discarded."""


class TooManyCallsError(ClusterRPCError):
    """A normal call was started while every in-flight slot of its endpoint was taken
    (``CallTracker.start``). A local error: the I/O layer must check ``has_capacity`` and wait
    for an outcome first. Nothing was sent and no call id was used."""


class LocalAccessError(ClusterRPCError, PermissionError):
    """The local client-server API refused access (``spec/local.md``): ``recovery_ok`` outside
    ``SYSTEM``, a uid the domain does not admit, a server whose uid is not the expected daemon
    uid, or a socket directory that is a symlink or writable by others. A ``PermissionError``,
    so code that handles the kernel's ``EACCES`` handles this too."""


class ElectionError(ClusterRPCError):
    """Leader election (``clusterrpc.components.election``) could not do what was asked."""


class NotLeaderError(ElectionError):
    """The operation needs this node to be the leader, and it is not (``transfer()``,
    ``lease_remaining()``). ``leader`` names the leader this node knows of, or is ``None``."""

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class NoLeaderError(ElectionError, TimeoutError):
    """No leader became known before the timeout (``wait_for_leader``): the voters are
    partitioned, too few are up, or the election is still running."""


class TransferError(ElectionError):
    """Leadership did not move to another voter within the transfer timeout (the target did
    not answer or lost its election). This node may still be the leader: read ``is_leader``."""


class TransportError(ClusterRPCError):
    """A call could not be carried to or from its peer. Raised by transports, which translate
    ``OSError`` into these (the ``OSError`` is kept as ``__cause__``)."""


class ConnectError(TransportError, ConnectionError):
    """Connecting to the peer failed: refused, unreachable, timed out, or no socket file."""


class ConnectionLostError(TransportError, ConnectionError):
    """The peer closed or broke the connection (or sent bytes that broke framing) while calls
    were in flight. Those calls have an unknown outcome: they may have run. The next call
    reconnects."""


class ConnectionClosedError(TransportError):
    """The client or node was closed by its owner (or was never started): no call can be made
    through it. Not a network failure."""


class HTTPError(TransportError):
    """An HTTP endpoint answered a call with an HTTP error status instead of an XML-RPC
    response (``status`` holds it: e.g. 401 without valid credentials, 404 for a wrong path)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason


class AuthenticationError(ClusterRPCError):
    """An incoming packet was refused by the packet layer.

    The caller must drop the packet and must not act on any part of it (not even reply to it:
    the sender is unknown). ``counter`` names the refusal counter this error increments.
    """

    counter: str = "refused"


class PacketError(AuthenticationError):
    """The packet or frame is truncated, oversized, or its header is malformed."""

    counter = "refused_malformed"


class WrongClusterError(AuthenticationError):
    """The packet belongs to another cluster (its header names another cluster)."""

    counter = "refused_wrong_cluster"


class UnknownKeyError(AuthenticationError):
    """The keyring has no key with the packet's key id for the packet's scheme (for example a
    key that was removed after a rotation)."""

    counter = "refused_unknown_key"


class UnknownSenderError(AuthenticationError):
    """No public key is trusted for the node the packet claims to come from (ed25519)."""

    counter = "refused_unknown_sender"


class InsecurePacketError(AuthenticationError):
    """The packet uses the ``none`` scheme, and this endpoint does not allow it."""

    counter = "refused_insecure"


class BadAuthenticatorError(AuthenticationError):
    """The MAC or signature does not match, or the ciphertext does not decrypt: the packet was
    forged or damaged."""

    counter = "refused_bad_authenticator"


class ReplayError(AuthenticationError):
    """The packet's sequence number was already accepted from this sender and epoch."""

    counter = "refused_replay"


class TooOldError(ReplayError):
    """The packet's sequence number is behind the replay window: it can no longer be told
    apart from a replay, so it is refused."""

    counter = "refused_too_old"


class StaleEpochError(AuthenticationError):
    """The packet comes from an epoch older than the newest seen from its sender, or from a
    never-seen epoch with a timestamp outside the freshness window."""

    counter = "refused_stale_epoch"
