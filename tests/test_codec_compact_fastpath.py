"""The compact codec's fast decoder against its reference, the tree path.

``CompactCodec.decode_call``/``decode_response`` first try a regular-expression reader of the
canonical form (``spec/codec-compact.md`` section 4, with layout white space) and fall back to the
expat tree path for anything else. For any input bytes the codec must give exactly what the tree
path alone gives, and the fast path must really be taken for canonical documents (helpers and
the rule: ``tests/fastpath.py``).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from clusterrpc.cli.main import SAMPLE_VOTE
from clusterrpc.codecs import compact
from clusterrpc.codecs._safexml import escape_text
from clusterrpc.codecs.base import FaultMessage, ReplyMessage
from clusterrpc.codecs.compact import CompactCodec
from clusterrpc.values import Limits, format_datetime
from tests import fastpath
from tests.fastpath import Outcome
from tests.strategies import datetimes, method_names, same, texts, values
from tests.vectors import codec_cases

CODEC = CompactCodec()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def check_call(body: bytes, codec: CompactCodec = CODEC) -> Outcome:
    return fastpath.check_call(codec, body)


def check_response(body: bytes, codec: CompactCodec = CODEC) -> Outcome:
    return fastpath.check_response(codec, body)


# Between elements only: the encoder escapes "<" and ">" in text and keys.
_BETWEEN_TAGS = re.compile(rb">(?=<)")


def layouts(body: bytes) -> list[bytes]:
    """``body`` as written, and with layout white space between every two tags."""
    return [body, _BETWEEN_TAGS.sub(b">\n \t ", body)]


# -- the encoder's bytes ------------------------------------------------------------------------
#
# The encoder writes struct members and list items inline; its bytes must stay exactly the
# canonical form of spec/codec-compact.md section 4, written here the slow, obvious way.


def _attribute(key: str) -> str:
    escaped = escape_text(key).replace('"', "&quot;")
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;")


def _canonical(value: Any, head: str = "<LI") -> str:
    if value is None:
        return f'{head} t="n"/>'
    if isinstance(value, bool):
        return f'{head} t="b">{int(value)}</LI>'
    if isinstance(value, int):
        return f'{head} t="i">{value}</LI>'
    if isinstance(value, float):
        return f'{head} t="f">{value!r}</LI>'
    if isinstance(value, str):
        return f"{head}>{escape_text(value)}</LI>" if value else f"{head}/>"
    if isinstance(value, bytes):
        if not value:
            return f'{head} t="x"/>'
        return f'{head} t="x">{base64.b64encode(value).decode()}</LI>'
    if isinstance(value, dt.datetime):
        return f'{head} t="d">{format_datetime(value)}</LI>'
    if isinstance(value, list):
        if not value:
            return f"{head}><L/></LI>"
        return f"{head}><L>{''.join(map(_canonical, value))}</L></LI>"
    if not value:
        return f"{head}><AL/></LI>"
    members = "".join(
        _canonical(item, f'<LI key="{_attribute(key)}"') for key, item in value.items()
    )
    return f"{head}><AL>{members}</AL></LI>"


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=method_names, params=st.lists(values(), min_size=1, max_size=4))
def test_encoder_writes_the_canonical_form(method: str, params: list[Any]) -> None:
    expected = f'<CALL m="{method}">' + "".join(map(_canonical, params)) + "</CALL>"
    assert CODEC.encode_call(method, params) == expected.encode()
    assert CODEC.encode_reply(params) == f"<REPLY>{_canonical(params)}</REPLY>".encode()


# -- documents that the fast path must take ------------------------------------------------------


@PROPERTY
@given(method=method_names, params=st.lists(values(), max_size=4))
def test_our_calls_take_the_fast_path(method: str, params: list[Any]) -> None:
    body = CODEC.encode_call(method, params)
    for layout in layouts(body):
        decoded = CODEC._fast_call(layout)
        assert decoded is not None, layout
        assert decoded.method == method
        assert same(list(decoded.params), params)
        check_call(layout)


@PROPERTY
@given(value=values())
def test_our_replies_take_the_fast_path(value: Any) -> None:
    body = CODEC.encode_reply(value)
    for layout in layouts(body):
        decoded = CODEC._fast_response(layout)
        assert isinstance(decoded, ReplyMessage), layout
        assert same(decoded.value, value)
        check_response(layout)


@PROPERTY
@given(code=st.integers(-(2**31), 2**31 - 1), message=texts)
def test_our_faults_take_the_fast_path(code: int, message: str) -> None:
    body = CODEC.encode_fault(code, message)
    assert CODEC._fast_response(body) == FaultMessage(code, message)
    check_response(body)


def test_vectors_agree_and_canonical_ones_take_the_fast_path() -> None:
    fast = set()
    for case in codec_cases("compact"):
        codec = CompactCodec(limits=case.limits) if case.limits else CODEC
        if "call" in case.kind:
            check_call(case.body, codec)
            if codec._fast_call(case.body) is not None:
                fast.add(case.name)
        else:
            check_response(case.body, codec)
            if codec._fast_response(case.body) is not None:
                fast.add(case.name)
    canonical = {
        case.name
        for case in codec_cases("compact")
        if case.direction == "both" and not case.kind.startswith("invalid")
    }
    assert canonical | {"reply-float-spellings"} <= fast


def test_decode_does_not_touch_the_tree_path_for_canonical_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_tree(data: bytes) -> Any:
        raise AssertionError("the tree path was used")

    body = CODEC.encode_call("election.vote", [SAMPLE_VOTE])
    reply = CODEC.encode_reply({"granted": True, "term": 42})
    fault = CODEC.encode_fault(-32601, "method 'election.bogus' not found")
    monkeypatch.setattr(compact, "parse_checked", no_tree)
    assert same(list(CODEC.decode_call(body).params), [SAMPLE_VOTE])
    assert CODEC.decode_response(reply) == ReplyMessage({"granted": True, "term": 42})
    assert CODEC.decode_response(fault) == FaultMessage(-32601, "method 'election.bogus' not found")
    with pytest.raises(AssertionError, match="tree path"):  # and anything else does use it
        CODEC.decode_call(body.replace(b"<AL>", b"<AL><!-- -->"))


# -- what the fast path leaves to the tree path --------------------------------------------------


def _call(items: bytes) -> bytes:
    return b'<CALL m="t.x">' + items + b"</CALL>"


FALLBACKS = {
    "declaration": b'<?xml version="1.0"?>' + _call(b"<LI>a</LI>"),
    "byte-order mark": b"\xef\xbb\xbf" + _call(b"<LI>a</LI>"),
    "comment": _call(b"<!-- c --><LI>a</LI>"),
    "cdata": _call(b"<LI><![CDATA[<a>]]></LI>"),
    "single quotes": _call(b"<LI t='i'>1</LI>"),
    "attribute order": _call(b'<LI><AL><LI t="i" key="k">1</LI></AL></LI>'),
    "space in tag": _call(b'<LI t="i" >1</LI>'),
    "carriage return": _call(b"<LI>a\rb</LI>"),
    "raw greater-than": _call(b"<LI>a > b</LI>"),
    "tab in key": _call(b'<LI><AL><LI key="a\tb" t="n"/></AL></LI>'),
    "empty typed content": _call(b'<LI t="n"></LI>'),
    "duplicate key": _call(b'<LI><AL><LI key="a" t="n"/><LI key="a" t="n"/></AL></LI>'),
    "non-canonical integer": _call(b'<LI t="i">01</LI>'),
    "zero fraction": _call(b'<LI t="d">20240101T00:00:00.000000</LI>'),
    "text beside a list": _call(b"<LI>x<L/></LI>"),
    "key in a list": _call(b'<LI><L><LI key="a">1</LI></L></LI>'),
    "uppercase character reference": _call(b"<LI>&#X41;</LI>"),
    "20-digit integer": _call(b'<LI t="i">10000000000000000000</LI>'),
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_documents_outside_the_subset_fall_back(name: str) -> None:
    body = FALLBACKS[name]
    assert CODEC._fast_call(body) is None
    check_call(body)


@pytest.mark.parametrize(
    "code",
    [0, 8, 9, 10, 13, 31, 32, 34, 60, 0x7F, 0xD7FF, 0xD800, 0xE000, 0xFFFD, 0xFFFE, 0x10000,
     0x10FFFF, 0x110000],
)
def test_character_references_agree(code: int) -> None:
    for reference in (f"&#{code};".encode(), f"&#x{code:x};".encode()):
        check_call(_call(b"<LI>a%sb</LI>" % reference))
        check_call(_call(b'<LI><AL><LI key="%s" t="n"/></AL></LI>' % reference))
        check_response(b'<FAULT code="1">%s</FAULT>' % reference)


@pytest.mark.parametrize(
    "text",
    ["20240229T12:00:00", "20230229T12:00:00", "00000101T00:00:00", "99991231T23:59:59.999999Z",
     "20240101T24:00:00", "20240101T23:59:60", "20240131T23:59:59.000000",
     "20240131T23:59:59.000001", "20240131T23:59:59+01:00", "20240131T23:59:59+00:00",
     "20240131T23:59:59-00:00:30", "20240131T23:59:59+24:00", "2024-01-31T23:59:59",
     "20240131T235959", "20241301T00:00:00"],
)
def test_datetimes_agree(text: str) -> None:
    check_call(_call(b'<LI t="d">%s</LI>' % text.encode()))


@settings(max_examples=1000, deadline=None)
@given(moment=datetimes)
@example(moment=dt.datetime(1, 1, 1))
def test_canonical_datetimes_take_the_fast_path(moment: dt.datetime) -> None:
    body = _call(b'<LI t="d">%s</LI>' % format_datetime(moment).encode())
    decoded = CODEC._fast_call(body)
    assert decoded is not None
    assert same(list(decoded.params), [moment])
    check_call(body)


@pytest.mark.parametrize(
    "text", ["1", "-0.0", "1e999", "-1e-999", "1.5E+300", "00.5", "1.", ".5", "+1", "0x1p3"]
)
def test_floats_agree(text: str) -> None:
    check_response(b'<REPLY><LI t="f">%s</LI></REPLY>' % text.encode())


@pytest.mark.parametrize(
    "text", ["", "QQ==", "QR==", "QQ", "QQ=", "Q===", "AAAA", "AA==AA==", "====", "A"]
)
def test_base64_agrees(text: str) -> None:
    check_response(b'<REPLY><LI t="x">%s</LI></REPLY>' % text.encode())


@pytest.mark.parametrize(
    "body",
    [b'<FAULT code="2147483647"/>', b'<FAULT code="2147483648"/>', b'<FAULT code="-0"/>',
     b'<FAULT code="-2147483648">x</FAULT>', b'<FAULT code="1">a&amp;b</FAULT>',
     b'<FAULT code="1">a&b</FAULT>', b'<FAULT code="1"> </FAULT> ', b"<REPLY></REPLY>",
     b'<REPLY><LI t="n"/><LI t="n"/></REPLY>', b'<CALL m="a b"/>', b'<CALL m="a"></CALL>'],
)
def test_envelopes_agree(body: bytes) -> None:
    check_call(body)
    check_response(body)


# -- limits --------------------------------------------------------------------------------------

LIMITS = [
    Limits(max_depth=1),
    Limits(max_depth=2),
    Limits(max_depth=3, max_items=8),
    Limits(max_string=4),
    Limits(max_string=30),
    Limits(max_items=3),
    Limits(max_size=200, max_string=8, max_depth=2),
]


@PROPERTY
@given(params=st.lists(values(max_leaves=12), max_size=3), limits=st.sampled_from(LIMITS))
def test_limits_agree(params: list[Any], limits: Limits) -> None:
    codec = CompactCodec(limits=limits)
    check_call(CODEC.encode_call("t.x", params), codec)
    check_response(CODEC.encode_reply(params), codec)


def test_long_documents_check_string_lengths() -> None:
    codec = CompactCodec(limits=Limits(max_string=100))
    within = CODEC.encode_reply({"a" * 100: ["x" * 100, b"y" * 100, "z" * 50]})
    assert len(within) > 100  # longer than max_string: the fast path checks every string
    assert codec._fast_response(within) is not None
    check_response(within, codec)
    overs: list[Any] = [{"a" * 101: 1}, ["x" * 101], [b"y" * 101], ["&" * 101]]
    for over in overs:
        body = CODEC.encode_reply(over)
        assert codec._fast_response(body) is None
        assert check_response(body, codec)[0] == "error"
    fault = CODEC.encode_fault(1, "m" * 101)
    assert codec._fast_response(fault) is None
    assert check_response(fault, codec)[0] == "error"


@pytest.mark.parametrize("value", [[[]], [{}], {"a": []}, {"a": {}}, [], {}])
@pytest.mark.parametrize("max_depth", [1, 2])
def test_empty_containers_count_for_depth(value: Any, max_depth: int) -> None:
    codec = CompactCodec(limits=Limits(max_depth=max_depth))
    check_response(CODEC.encode_reply(value), codec)
    check_call(CODEC.encode_call("t.x", [value]), codec)


# -- mutation fuzzing ----------------------------------------------------------------------------

SNIPPETS = [
    b"\r", b"\r\n", b"\x00", b"\x0b", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"&", b"&#0;",
    b"&#xFFFE;", b"&bogus;", b"]]>", b">", b"<", b"</", b"/>", b"<!-- c -->", b"<?pi x?>",
    b"<![CDATA[x]]>", b' a="1"', b' t="i"', b' key="k"', b' key="k"', b"<x/>", b"<LI>",
    b"</LI>", b"<LI/>", b'<LI t="n"/>', b"<L>", b"</L>", b"<L/>", b"<AL>", b"</AL>", b"<AL/>",
    b'<LI key="a" t="n"/>', b"<REPLY>", b"</CALL>", b"<!DOCTYPE x>", b"99999999999999999999",
]
LAYOUT = [b" ", b"\t", b"\n", b"\n  ", b"\r\n", b"\xc2\x85"]
TEXT = [
    b"a", b"0", b"1", b"-", b"+", b".", b"e", b"E", b"Z", b"T", b":", b"=", b" ", b"\t", b"\n",
    b"&amp;", b"&lt;", b"&gt;", b"&quot;", b"&apos;", b"&#13;", b"&#9;", b"&#x41;",
    b"&#x10FFFF;", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xef\xbf\xbe", b"\x7f", b'"', b"'",
]
TAGS = [b"LI", b"L", b"AL", b"CALL", b"REPLY", b"FAULT", b"li", b"x:LI"]


def mutations(body: bytes) -> st.SearchStrategy[bytes]:
    return fastpath.mutations(body, snippets=SNIPPETS, layout=LAYOUT, text=TEXT, tags=TAGS)


VALID = [case.body for case in codec_cases("compact") if not case.kind.startswith("invalid")]
VALID += [
    CODEC.encode_call("election.vote", [SAMPLE_VOTE]),
    CODEC.encode_reply(SAMPLE_VOTE),
    CODEC.encode_reply([{"a": [1, "x&y", b"z"], "b&\t\"": {}}, [], {}, "", b""]),
    CODEC.encode_fault(-32601, "a & b\r\n"),
]
generated_bodies = st.one_of(
    st.sampled_from(VALID),
    st.lists(values(max_leaves=8), max_size=2).map(lambda p: CODEC.encode_call("t.x", p)),
    values(max_leaves=8).map(CODEC.encode_reply),
)


@FUZZ
@given(data=st.data())
def test_mutated_documents_agree(data: st.DataObject) -> None:
    body = data.draw(generated_bodies)
    mutated = data.draw(mutations(body))
    check_call(mutated)
    check_response(mutated)
    if CODEC._fast_call(mutated) is not None or CODEC._fast_response(mutated) is not None:
        event("fast path took the mutated document")


@FUZZ
@given(
    body=generated_bodies,
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3)), max_size=3),
)
def test_byte_mutations_agree(body: bytes, edits: list[tuple[int, bytes]]) -> None:
    mutated = bytearray(body)
    for offset, replacement in edits:
        position = offset % (len(mutated) + 1)
        mutated[position : position + len(replacement)] = replacement
    check_call(bytes(mutated))
    check_response(bytes(mutated))


@FUZZ
@given(body=generated_bodies, limits=st.sampled_from(LIMITS), data=st.data())
def test_mutated_documents_agree_under_limits(
    body: bytes, limits: Limits, data: st.DataObject
) -> None:
    codec = CompactCodec(limits=limits)
    mutated = data.draw(mutations(body))
    check_call(mutated, codec)
    check_response(mutated, codec)
