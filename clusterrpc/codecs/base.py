"""The codec interface: messages as data, and the abstract :class:`Codec`.

A codec turns the three RPC messages into bytes and back:

* a **call** — a method name and a tuple of parameters (:class:`CallMessage`);
* a **reply** — exactly one value (:class:`ReplyMessage`);
* a **fault** — an integer code and a message (:class:`FaultMessage`).

Codecs are sans-I/O and hold no mutable state, so one instance may be shared by any number of
connections and threads. Which message kind a packet holds is known from the packet header, but a
standard XML-RPC response may be either a reply or a fault, hence :meth:`Codec.decode_response`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Sequence
from typing import ClassVar, NoReturn

from clusterrpc.errors import DecodeError, EncodeError, FaultCode, LimitExceededError
from clusterrpc.values import DEFAULT_LIMITS, INT32_MAX, INT32_MIN, Limits, Value, check_value

__all__ = [
    "CallMessage",
    "Codec",
    "FaultMessage",
    "ReplyMessage",
    "check_fault",
    "check_method_name",
    "invalid_message",
    "nesting_too_deep",
    "string_too_long",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CallMessage:
    """A decoded call: ``method`` (e.g. ``"election.vote"``) and its positional ``params``."""

    method: str
    params: tuple[Value, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyMessage:
    """A decoded successful reply, carrying exactly one ``value``."""

    value: Value


@dataclasses.dataclass(frozen=True, slots=True)
class FaultMessage:
    """A decoded fault: an integer ``code`` and a human-readable ``message``."""

    code: int
    message: str


def invalid_message(reason: str) -> DecodeError:
    """A :class:`DecodeError` for a well-formed body that is not a valid message
    (fault code ``INVALID_REQUEST``)."""
    return DecodeError(reason, fault_code=FaultCode.INVALID_REQUEST)


def string_too_long(limits: Limits) -> LimitExceededError:
    """The error for a string, key or bytes value over ``limits.max_string``."""
    return LimitExceededError(f"string longer than max_string={limits.max_string}")


def nesting_too_deep(limits: Limits) -> LimitExceededError:
    """The error for containers nested deeper than ``limits.max_depth``."""
    return LimitExceededError(f"nesting deeper than max_depth={limits.max_depth}")


# XML-RPC spec: "The string may only contain identifier characters, upper and lower-case A-Z,
# the numeric characters, 0-9, underscore, dot, colon and slash." We hold every codec to it so
# that a method reachable through one codec is reachable through all.
_METHOD_NAME = re.compile(r"[A-Za-z0-9_.:/]{1,256}\Z")


def check_method_name(method: object, *, decoding: bool = False) -> str:
    """Return ``method`` if it is a valid method name, else raise.

    Valid names are 1-256 characters from ``A-Z a-z 0-9 _ . : /`` (the XML-RPC spec's set).
    Raises :class:`EncodeError` (or :class:`DecodeError` with ``INVALID_REQUEST`` when
    ``decoding``).
    """
    if isinstance(method, str) and _METHOD_NAME.match(method):
        return method
    reason = (
        f"invalid method name {method!r}: 1-256 characters from A-Z a-z 0-9 _ . : / required"
    )
    if decoding:
        raise invalid_message(reason)
    raise EncodeError(reason, "method")


def check_fault(code: object, message: object) -> tuple[int, str]:
    """Validate a fault's code (a 32-bit int, as XML-RPC requires) and message (a str)."""
    if not isinstance(code, int) or isinstance(code, bool):
        raise EncodeError(f"fault code must be an int, not {type(code).__name__}", "fault.code")
    if not INT32_MIN <= code <= INT32_MAX:
        raise EncodeError(f"fault code {code} does not fit in 32 bits", "fault.code")
    if not isinstance(message, str):
        raise EncodeError(
            f"fault message must be a str, not {type(message).__name__}", "fault.message"
        )
    return int(code), str(message)


class Codec(abc.ABC):
    """Abstract base of every codec, built-in or plugin.

    A concrete codec sets three class attributes and implements five methods:

    ``name``
        the registry name (lower case, e.g. ``"xmlrpc"``), equal to its entry-point name;
    ``codec_id``
        the byte that names it in packet headers: 1-127 are reserved for clusterrpc's own
        codecs, 128-255 are for plugins (see ``spec/codecs.md``);
    ``media_type``
        the MIME type of its bodies (used by HTTP transports).

    Instances are created with keyword-only configuration (``limits=``) and are immutable.
    Encoders raise :class:`~clusterrpc.errors.EncodeError` and nothing else for values they
    cannot carry; decoders raise :class:`~clusterrpc.errors.DecodeError` (or its subclass
    :class:`~clusterrpc.errors.LimitExceededError`) and nothing else for any input bytes.
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    media_type: ClassVar[str]

    __slots__ = ("limits",)

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} id={self.codec_id}>"

    @abc.abstractmethod
    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        """Encode a call of ``method`` with positional ``params``."""

    @abc.abstractmethod
    def encode_reply(self, value: Value) -> bytes:
        """Encode a successful reply carrying ``value``."""

    @abc.abstractmethod
    def encode_fault(self, code: int, message: str) -> bytes:
        """Encode a fault with integer ``code`` (32-bit) and ``message``."""

    @abc.abstractmethod
    def decode_call(self, data: bytes) -> CallMessage:
        """Decode a call; raises :class:`DecodeError` for anything else."""

    @abc.abstractmethod
    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode a reply or a fault; raises :class:`DecodeError` for anything else."""

    def explain_encode_failure(self, values: Sequence[Value], root: str) -> NoReturn:
        """Raise the :class:`EncodeError` that names the first offending place in ``values``.

        The slow path of every encoder: their fast passes only notice *that* something is
        wrong; :func:`~clusterrpc.values.check_value` says what and where. ``root`` is a format
        string for each value's path (``"params[{}]"``, ``"value"``).
        """
        items = 0
        try:
            for index, value in enumerate(values):
                items += check_value(value, self.limits, root.format(index))
                if items > self.limits.max_items:
                    raise EncodeError(
                        f"more than max_items={self.limits.max_items} values in one message",
                        root.format(index),
                    )
        except RecursionError:
            # Only reachable when limits.max_depth exceeds what the interpreter can recurse.
            raise EncodeError(
                "value nested too deeply for this interpreter's recursion limit"
            ) from None
        except ValueError as error:
            if isinstance(error, EncodeError):
                raise
            # e.g. a released memoryview
            raise EncodeError(f"value cannot be encoded: {error}") from None
        # check_value accepted what the fast path refused: a bug, but never send a bad body.
        raise EncodeError(f"value cannot be encoded by the {self.name} codec")

    def check_encoded_size(self, data: bytes) -> bytes:
        """Return ``data``, or raise :class:`EncodeError` if it is over ``limits.max_size``."""
        if len(data) > self.limits.max_size:
            raise EncodeError(
                f"encoded message is {len(data)} bytes, over max_size={self.limits.max_size}"
            )
        return data

    def check_size(self, data: bytes | bytearray | memoryview) -> None:
        """Raise :class:`~clusterrpc.errors.LimitExceededError` if ``data`` is over
        ``limits.max_size``. Decoders call this before parsing anything."""
        size = len(data)
        if size > self.limits.max_size:
            raise LimitExceededError(
                f"message of {size} bytes exceeds max_size={self.limits.max_size}"
            )
