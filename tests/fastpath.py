"""Helpers for the differential tests of the XML codecs' fast decoders against their tree paths.

Both ``xmlrpc`` and ``compact`` decode canonical documents with a fast path and fall back to the
tree path (the reference) for anything else. The rule: for any bytes, the codec gives exactly
what the tree path alone gives (``_decode_call_safe``/``_decode_response_safe``), the same value
with the same types or the same error, and whenever the fast path accepts a document
(``_fast_call``/``_fast_response`` not ``None``), the tree path accepts it too, with that value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from hypothesis import strategies as st

from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.errors import DecodeError
from tests.strategies import same

Message = CallMessage | ReplyMessage | FaultMessage
Outcome = tuple[Any, ...]


class FastCodec(Protocol):
    def decode_call(self, data: bytes) -> CallMessage: ...
    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage: ...
    def _decode_call_safe(self, data: bytes) -> CallMessage: ...
    def _decode_response_safe(self, data: bytes) -> ReplyMessage | FaultMessage: ...
    def _prechecked(self, data: bytes) -> bytes: ...
    def _fast_call(self, data: bytes) -> CallMessage | None: ...
    def _fast_response(self, data: bytes) -> ReplyMessage | FaultMessage | None: ...


def outcome(decode: Callable[[bytes], Message], body: bytes) -> Outcome:
    """``("ok", message)`` or ``("error", class, message, fault code)``."""
    try:
        message = decode(body)
    except DecodeError as error:
        return ("error", type(error), str(error), error.fault_code)
    return ("ok", message)


def same_outcome(left: Outcome, right: Outcome) -> bool:
    """Equal outcomes: equal errors, or messages whose values are the same (types included)."""
    if left[0] != right[0]:
        return False
    if left[0] == "error":
        return left == right
    one, other = left[1], right[1]
    if type(one) is not type(other):
        return False
    if isinstance(one, CallMessage):
        return one.method == other.method and same(list(one.params), list(other.params))
    if isinstance(one, ReplyMessage):
        return same(one.value, other.value)
    return bool(one == other)


def prechecked(codec: FastCodec, body: bytes) -> bool:
    """Whether ``body`` passes the checks that run before either path (size, counts): the fast
    path is only ever given such bodies."""
    try:
        codec._prechecked(body)
    except DecodeError:
        return False
    return True


def check_call(codec: FastCodec, body: bytes) -> Outcome:
    """Assert ``codec`` decodes ``body`` as a call exactly as its tree path does."""
    fast = codec._fast_call(body) if prechecked(codec, body) else None
    reference = outcome(codec._decode_call_safe, body)
    if fast is not None:  # the fast path accepted it: the tree path must give the same value
        assert same_outcome(("ok", fast), reference), (body, fast, reference)
    result = outcome(codec.decode_call, body)
    assert same_outcome(result, reference), (body, result, reference)
    return result


def check_response(codec: FastCodec, body: bytes) -> Outcome:
    """Assert ``codec`` decodes ``body`` as a response exactly as its tree path does."""
    fast = codec._fast_response(body) if prechecked(codec, body) else None
    reference = outcome(codec._decode_response_safe, body)
    if fast is not None:
        assert same_outcome(("ok", fast), reference), (body, fast, reference)
    result = outcome(codec.decode_response, body)
    assert same_outcome(result, reference), (body, result, reference)
    return result


_BETWEEN = re.compile(rb"<|(?<=>)")  # before a tag, or after one: never inside


def mutations(
    body: bytes,
    *,
    snippets: Sequence[bytes],
    layout: Sequence[bytes],
    text: Sequence[bytes],
    tags: Sequence[bytes],
) -> st.SearchStrategy[bytes]:
    """``body`` with one to three edits: ``layout`` (white space) and ``text`` (characters,
    references) between tags or in text, a tag of ``tags`` renamed throughout (which keep it
    valid, or nearly so); ``snippets`` of markup, single bytes and deletions (which mostly do
    not)."""

    @st.composite
    def edited(draw: st.DrawFn) -> bytes:
        data = bytes(body)
        for _ in range(draw(st.integers(1, 3))):
            edges = [m.start() for m in _BETWEEN.finditer(data)] or [0]
            edge = draw(st.sampled_from(edges))
            anywhere = draw(st.integers(0, len(data)))
            action = draw(
                st.sampled_from(["layout", "text", "text", "rename", "snippet", "byte", "delete"])
            )
            if action == "layout":
                data = data[:edge] + draw(st.sampled_from(layout)) + data[edge:]
            elif action == "text":
                data = data[:edge] + draw(st.sampled_from(text)) + data[edge:]
            elif action == "rename":
                old = draw(st.sampled_from(tags))
                new = draw(st.sampled_from(tags))
                for form in (b"<%s>", b"</%s>", b"<%s/>", b"<%s "):
                    data = data.replace(form % old, form % new)
            elif action == "snippet":
                data = data[:edge] + draw(st.sampled_from(snippets)) + data[edge:]
            elif action == "byte":
                data = data[:anywhere] + bytes([draw(st.integers(0, 255))]) + data[anywhere + 1 :]
            else:
                data = data[:anywhere] + data[anywhere + draw(st.integers(1, 12)) :]
        return data

    return edited()
