"""Exit statuses of the ``clusterrpc`` command, and which error gives which.

This table is the reference that ``clusterrpc --help`` and the README point at.

====  =========================================================================================
code  meaning
====  =========================================================================================
0     success
1     the remote method answered with a fault (``call``, ``methods``, ``members``, ``leader``,
      ``status``: also a node that runs no membership, election or ``node`` service, and a
      ``leader transfer`` that did not happen in time; ``call --group``: any member's fault);
      for the codec commands, a body that cannot be decoded or a round trip that is not exact
2     usage or configuration error: bad arguments, an argument that is not JSON, unknown codec,
      a keyring or config file that is missing or invalid, a service that cannot be imported;
      a client configuration file (:mod:`clusterrpc.cli.defaults`) that cannot be read, is not
      TOML, or has an unknown key or a bad value (the message names the file and the key);
      ``keys``: FILE and ``-k`` naming different keyrings, an ambiguous ``keys import``
3     transport error: cannot connect, connection lost, an HTTP error status, an answer that
      cannot be decoded, an address ``serve`` cannot listen on; ``local ls``: no cluster with
      local sockets, a local socket that cannot be reached
4     timeout: no answer within ``--timeout`` (nodes stay silent when a call does not
      authenticate, so a wrong key or cluster name shows up here too); ``call --group``: an
      expected member (or every member) did not answer
5     authentication refused where it can be seen: HTTP 401/403 from an XML-RPC server, or a
      packet refused by the packet layer; ``local ls``: the local API refusing this process
130   interrupted (Ctrl-C) while waiting for an answer
141   standard output was closed before everything was written (``clusterrpc … | head``), as
      for a process that SIGPIPE ends
====  =========================================================================================

Which command can return which (every command may also end with 2 for bad arguments, 130 and
141):

=========================================================  ===================================
command                                                    statuses
=========================================================  ===================================
``call``, ``methods``, ``members``, ``leader``, ``status``  0, 1, 2, 3, 4, 5
``call --group``                                           0, 1, 2, 3, 4
``local ls``                                               0, 2, 3, 4, 5
``keys`` (every subcommand)                                0, 2
``serve`` / ``daemon``                                     0, 2, 3
``codecs``                                                 0
``roundtrip``, ``decode``                                  0, 1, 2
``encode``                                                 0, 2
``plugins list``, ``plugins describe``                     0, 2
``config check``                                           0, 2 (every problem listed)
``demo``                                                   0, 1 (a daemon failed), 2, 4
=========================================================  ===================================

With ``--json`` the statuses are the same. On a fault ``call --json`` also prints the fault as a
JSON document and ``call --group --json`` every member's answer; ``local ls --json`` prints the
clusters it could list; the other commands print no document when they fail.
"""

from __future__ import annotations

from clusterrpc.errors import (
    AuthenticationError,
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    Fault,
    HTTPError,
    TransportError,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "UsageError",
    "status_of",
]

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_FAILED = 1  # the codec commands' "not exact / cannot decode": the same number
EXIT_USAGE = 2
EXIT_TRANSPORT = 3
EXIT_TIMEOUT = 4
EXIT_AUTH = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_AUTH_HTTP_STATUSES = (401, 403)


class UsageError(Exception):
    """A command-line argument or file is wrong: exit status 2, one line on standard error."""


def status_of(error: BaseException) -> tuple[int, str]:
    """The exit status for ``error`` and the line to print on standard error (without the
    ``clusterrpc:`` prefix)."""
    if isinstance(error, Fault):
        return EXIT_FAULT, str(error)  # "fault CODE: message"
    if isinstance(error, UsageError | EncodeError | ConfigurationError):
        return EXIT_USAGE, f"error: {error}"
    if isinstance(error, HTTPError) and error.status in _AUTH_HTTP_STATUSES:
        return EXIT_AUTH, f"error: authentication refused: {error}"
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH, f"error: authentication refused: {error}"
    if isinstance(error, CallTimeoutError):
        return EXIT_TIMEOUT, f"error: {error}"
    if isinstance(error, TransportError):
        return EXIT_TRANSPORT, f"error: {error}"
    if isinstance(error, DecodeError):
        return EXIT_FAILED, f"cannot decode: {error}"
    if isinstance(error, ClusterRPCError):
        return EXIT_FAILED, f"error: {error}"
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    raise error
