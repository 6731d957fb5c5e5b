"""The xmlrpc codec's fast decoder against its reference, the tree path.

``XmlRpcCodec.decode_call``/``decode_response`` first try a strict regular-expression reader of
canonical documents and fall back to the expat tree path for anything else (``spec/codecs.md``,
"How the decoder is built"). The rule tested here: for any input bytes, the codec gives exactly
what the tree path alone gives (``_decode_call_safe``/``_decode_response_safe``) — the same value
with the same types, or the same error — and the fast path is really taken for the documents it
exists for, so that the optimisation cannot silently rot.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
import xmlrpc.client
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from clusterrpc.cli.main import SAMPLE_VOTE
from clusterrpc.codecs import _safexml
from clusterrpc.codecs import xmlrpc as xmlrpc_codec
from clusterrpc.codecs._safexml import escape_text
from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.errors import EncodeError
from clusterrpc.values import Limits, format_datetime, parse_datetime
from tests import fastpath
from tests.fastpath import Outcome
from tests.strategies import datetimes, method_names, same, values
from tests.vectors import codec_cases

CODEC = XmlRpcCodec()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))



def check_call(body: bytes, codec: XmlRpcCodec = CODEC) -> Outcome:
    """Assert the codec decodes ``body`` as a call exactly as the tree path does."""
    return fastpath.check_call(codec, body)


def check_response(body: bytes, codec: XmlRpcCodec = CODEC) -> Outcome:
    """Assert the codec decodes ``body`` as a response exactly as the tree path does."""
    return fastpath.check_response(codec, body)


# -- the encoder's bytes ------------------------------------------------------------------------
#
# The encoder writes struct members and array elements inline and formats datetimes from
# isoformat(); its bytes must stay exactly those of the canonical form in spec/codecs.md, written
# here the slow, obvious way.


def _canonical(value: Any) -> str:
    if value is None:
        return "<value><nil/></value>"
    if isinstance(value, bool):
        return f"<value><boolean>{int(value)}</boolean></value>"
    if isinstance(value, int):
        tag = "int" if -(2**31) <= value < 2**31 else "i8"
        return f"<value><{tag}>{value}</{tag}></value>"
    if isinstance(value, float):
        return f"<value><double>{value!r}</double></value>"
    if isinstance(value, str):
        return f"<value><string>{escape_text(value)}</string></value>"
    if isinstance(value, bytes):
        return f"<value><base64>{base64.b64encode(value).decode()}</base64></value>"
    if isinstance(value, dt.datetime):
        return f"<value><dateTime.iso8601>{format_datetime(value)}</dateTime.iso8601></value>"
    if isinstance(value, list):
        return f"<value><array><data>{''.join(map(_canonical, value))}</data></array></value>"
    members = "".join(
        f"<member><name>{escape_text(key)}</name>{_canonical(item)}</member>"
        for key, item in value.items()
    )
    return f"<value><struct>{members}</struct></value>"


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=method_names, params=st.lists(values(), max_size=4))
def test_encoder_writes_the_canonical_form(method: str, params: list[Any]) -> None:
    expected = (
        f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName><params>'
        + "".join(f"<param>{_canonical(param)}</param>" for param in params)
        + "</params></methodCall>"
    )
    assert CODEC.encode_call(method, params) == expected.encode()
    reply = f'<?xml version="1.0"?><methodResponse><params><param>{_canonical(params)}'
    assert CODEC.encode_reply(params) == (reply + "</param></params></methodResponse>").encode()


class _Zone(dt.tzinfo):
    """A tzinfo that is not datetime.timezone: any fixed offset, or none at all."""

    def __init__(self, offset: dt.timedelta | None) -> None:
        self.offset = offset

    def utcoffset(self, moment: dt.datetime | None) -> dt.timedelta | None:
        return self.offset

    def dst(self, moment: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, moment: dt.datetime | None) -> str | None:
        return None


@settings(max_examples=1000, deadline=None)
@given(
    moment=datetimes,
    zone=st.none()
    | st.integers(-86_399, 86_399).map(lambda s: _Zone(dt.timedelta(seconds=s)))
    | st.just(_Zone(None))
    | st.integers(-86_399, 86_399).map(lambda s: dt.timezone(dt.timedelta(seconds=s))),
)
@example(moment=dt.datetime(1, 1, 1), zone=None)
@example(moment=dt.datetime(2024, 1, 1, 0, 0, 0, 1), zone=_Zone(dt.timedelta(0)))
def test_datetimes_are_written_as_format_datetime_writes_them(
    moment: dt.datetime, zone: dt.tzinfo | None
) -> None:
    if zone is not None:
        moment = moment.replace(tzinfo=zone)
    body = CODEC.encode_reply(moment)
    assert f"<dateTime.iso8601>{format_datetime(moment)}<".encode() in body
    assert same(CODEC.decode_response(body).value, parse_datetime(format_datetime(moment)))  # type: ignore[union-attr]


def _format_datetime_by_fields(moment: dt.datetime) -> str:
    """clusterrpc.values.format_datetime as it was written before it used isoformat()."""
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    offset = moment.utcoffset()
    if offset is not None:
        total = int(offset.total_seconds())
        if total == 0:
            return text + "Z"
        sign = "+" if total > 0 else "-"
        hours, rest = divmod(abs(total), 3600)
        minutes, seconds = divmod(rest, 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
        if seconds:
            text += f":{seconds:02d}"
    return text


@settings(max_examples=2000, deadline=None)
@given(
    moment=datetimes,
    zone=st.none()
    | st.just(dt.UTC)
    | st.just(_Zone(None))
    | st.integers(-86_399_999_999, 86_399_999_999).map(
        lambda us: _Zone(dt.timedelta(microseconds=us))
    )
    | st.integers(-86_399, 86_399).map(lambda s: dt.timezone(dt.timedelta(seconds=s))),
)
@example(moment=dt.datetime(1, 1, 1), zone=_Zone(dt.timedelta(microseconds=-1)))
@example(moment=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999), zone=dt.UTC)
def test_format_datetime_writes_what_it_always_wrote(
    moment: dt.datetime, zone: dt.tzinfo | None
) -> None:
    moment = moment.replace(tzinfo=zone)
    assert format_datetime(moment) == _format_datetime_by_fields(moment)


def test_sub_second_offsets_are_still_refused() -> None:
    moment = dt.datetime(2024, 1, 1, tzinfo=_Zone(dt.timedelta(microseconds=-1)))
    with pytest.raises(EncodeError, match="whole seconds"):
        CODEC.encode_reply({"a": moment})
    with pytest.raises(EncodeError, match="whole seconds"):
        CODEC.encode_reply(moment)


# -- documents that the fast path must take ------------------------------------------------------

# What xmlrpc.client can write (as in test_codec_xmlrpc.py): no CR, no aware or sub-second
# datetimes, 32-bit ints.
stdlib_texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\ufffe\uffff")
    .filter(lambda c: c in "\t\n" or c >= " "),
    max_size=20,
)
stdlib_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**31), 2**31 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        stdlib_texts,
        st.binary(max_size=80),
        st.datetimes(min_value=dt.datetime(1000, 1, 1)).map(lambda d: d.replace(microsecond=0)),
    ),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(stdlib_texts, children, max_size=5),
    max_leaves=20,
)

# Between tags only: "<" and ">" are always escaped in character data by both writers.
_BETWEEN_TAGS = re.compile(rb">[ \t\n]*<")


def layouts(body: bytes) -> list[bytes]:
    """``body`` as written, with no white space between tags, and with more of it."""
    return [
        body,
        _BETWEEN_TAGS.sub(b"><", body),
        _BETWEEN_TAGS.sub(b">\n \t <", body),
    ]


@PROPERTY
@given(method=method_names, params=st.lists(values(), max_size=4))
def test_our_calls_take_the_fast_path(method: str, params: list[Any]) -> None:
    body = CODEC.encode_call(method, params)
    decoded = CODEC._fast_call(body)
    assert decoded is not None, body
    assert decoded.method == method
    assert same(list(decoded.params), params)
    check_call(body)


@PROPERTY
@given(value=values())
def test_our_replies_take_the_fast_path(value: Any) -> None:
    body = CODEC.encode_reply(value)
    decoded = CODEC._fast_response(body)
    assert isinstance(decoded, ReplyMessage), body
    assert same(decoded.value, value)
    check_response(body)


@PROPERTY
@given(code=st.integers(-(2**31), 2**31 - 1), message=st.text(max_size=40))
def test_our_faults_take_the_fast_path(code: int, message: str) -> None:
    try:
        body = CODEC.encode_fault(code, message)
    except ValueError:
        return  # a message XML cannot carry
    assert CODEC._fast_response(body) == FaultMessage(code, message)
    check_response(body)


@PROPERTY
@given(method=method_names, params=st.lists(stdlib_values, max_size=3))
def test_stdlib_calls_take_the_fast_path(method: str, params: list[Any]) -> None:
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode("utf-8")
    for layout in layouts(body):
        assert CODEC._fast_call(layout) is not None, layout
        check_call(layout)
    decoded = CODEC._fast_call(body)
    assert decoded is not None
    assert same(list(decoded.params), params)


@PROPERTY
@given(value=stdlib_values)
def test_stdlib_responses_take_the_fast_path(value: Any) -> None:
    body = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode("utf-8")
    for layout in layouts(body):
        assert CODEC._fast_response(layout) is not None, layout
        check_response(layout)
    fault = xmlrpc.client.dumps(xmlrpc.client.Fault(-32500, "boom & <bust>"), methodresponse=True)
    for layout in layouts(fault.encode("utf-8")):
        assert CODEC._fast_response(layout) == FaultMessage(-32500, "boom & <bust>")
        check_response(layout)


def test_vectors_agree_and_canonical_ones_take_the_fast_path() -> None:
    fast = set()
    for case in codec_cases("xmlrpc"):
        codec = XmlRpcCodec(limits=case.limits) if case.limits else CODEC
        if "call" in case.kind:
            check_call(case.body, codec)
            if codec._fast_call(case.body) is not None:
                fast.add(case.name)
        else:
            check_response(case.body, codec)
            if codec._fast_response(case.body) is not None:
                fast.add(case.name)
    # Everything our encoder writes, and xmlrpc.client's layout, is read by the fast path.
    written = {
        case.name
        for case in codec_cases("xmlrpc")
        if case.direction == "both" and not case.kind.startswith("invalid")
    }
    assert written | {"call-stdlib-style", "reply-fault-i4"} <= fast


def test_decode_does_not_touch_the_tree_path_for_canonical_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_tree(self: XmlRpcCodec, data: bytes, root_tag: str) -> Any:
        raise AssertionError("the tree path was used")

    body = CODEC.encode_call("election.vote", [SAMPLE_VOTE])
    reply = CODEC.encode_reply({"granted": True, "term": 42})
    fault = CODEC.encode_fault(-32601, "method 'election.bogus' not found")
    monkeypatch.setattr(XmlRpcCodec, "_tree", no_tree)
    assert same(list(CODEC.decode_call(body).params), [SAMPLE_VOTE])
    assert CODEC.decode_response(reply) == ReplyMessage({"granted": True, "term": 42})
    assert CODEC.decode_response(fault) == FaultMessage(-32601, "method 'election.bogus' not found")
    with pytest.raises(AssertionError, match="tree path"):  # and anything else does use it
        CODEC.decode_call(body.replace(b"<params>", b"<params><!-- -->"))


@pytest.mark.parametrize(
    "tail",
    [
        b"</methodCall>",
        b"<params></params></methodCall>",
        b" <params>\n\t</params>\n</methodCall>\n",
    ],
)
def test_calls_without_parameters_are_read_by_the_head_alone(tail: bytes) -> None:
    for head in (b"", HEAD, HEAD + b"\n"):
        body = head + b"<methodCall><methodName>t.x</methodName>" + tail
        assert CODEC._fast_call(body) == CallMessage("t.x", ())
        check_call(body)
        # What is not a whole call without parameters is left to the other readers.
        for spoilt in (body + b"<x/>", body.replace(b"</methodCall>", b"</methodCall >")):
            check_call(spoilt)


def test_canonical_struct_replies_agree_with_the_head_pattern() -> None:
    """The prefix test that stands in for the head pattern on our struct replies."""
    reply = CODEC.encode_reply({"term": 42, "leader": "m0"})
    assert reply.startswith(xmlrpc_codec._CANONICAL_STRUCT_REPLY.encode())
    assert CODEC._fast_response(reply) == ReplyMessage({"term": 42, "leader": "m0"})
    struct = b"<struct>"
    for after in (b"", b" ", b"\n", b"x", b"<", b"<member>", b"</struct>", b"</struct></value>"):
        check_response(reply.replace(struct, struct + after))
    empty = CODEC.encode_reply({})
    assert CODEC._fast_response(empty) == ReplyMessage({})
    check_response(empty)
    spaced = reply.replace(struct, struct + b"\n ")
    assert CODEC._fast_response(spaced) == ReplyMessage({"term": 42, "leader": "m0"})


def test_fast_path_works_without_pattern_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pattern.scanner is undocumented; where it is missing, _safexml.scanner stands in."""
    for name in ("_STRUCT_ITEMS", "_ARRAY_ITEMS", "_CALL_PARAMS", "_RESPONSE_PARAMS"):
        pattern = getattr(xmlrpc_codec, name).__self__
        shim = functools.partial(_safexml._PositionScanner, pattern.match)
        monkeypatch.setattr(xmlrpc_codec, name, shim)
    codec = XmlRpcCodec()
    value: dict[str, Any] = {"a": [1, {"b": "x&y"}, []], "c": SAMPLE_VOTE}
    call = codec._fast_call(codec.encode_call("t.x", [value, 2]))
    assert call is not None
    assert same(list(call.params), [value, 2])
    reply = codec._fast_response(codec.encode_reply(value))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)
    assert codec._fast_call(codec.encode_call("t.x", [value]).replace(b"</data>", b"<x/>")) is None


# -- what the fast path leaves to the tree path --------------------------------------------------

HEAD = b'<?xml version="1.0"?>'
CALL = b"<methodCall><methodName>t.x</methodName><params><param>%s</param></params></methodCall>"


def _call(value: bytes, head: bytes = HEAD) -> bytes:
    return head + CALL % value


FALLBACKS = {
    "comment": _call(b"<value><!-- c --><int>1</int></value>"),
    "processing instruction": _call(b"<value><?pi x?><int>1</int></value>"),
    "cdata": _call(b"<value><string><![CDATA[<x>]]></string></value>"),
    "attribute": _call(b'<value a="1"><int>1</int></value>'),
    "namespaced type": _call(
        b'<value><ex:i8 xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions">5</ex:i8>'
        b"</value>"
    ),
    "doctype": HEAD + b"<!DOCTYPE methodCall []>" + CALL % b"<value><int>1</int></value>",
    "carriage return": _call(b"<value><string>a\rb</string></value>"),
    "carriage return between tags": _call(b"<value>\r\n<int>1</int></value>"),
    "latin-1": _call(b"<value>caf\xe9</value>", b'<?xml version="1.0" encoding="ISO-8859-1"?>'),
    "byte-order mark": b"\xef\xbb\xbf" + _call(b"<value><int>1</int></value>"),
    "standalone": _call(b"<value><int>1</int></value>", b'<?xml version="1.0" standalone="yes"?>'),
    "raw greater-than": _call(b"<value><string>a > b</string></value>"),
    "text between tags": _call(b"<value>x<int>1</int></value>"),
    "true": _call(b"<value><boolean>true</boolean></value>"),
    "empty-element string": _call(b"<value><string/></value>"),
    "empty-element value": _call(b"<value/>"),
    "20-digit integer": _call(b"<value><int>00000000000000000001</int></value>"),
    "uppercase character reference": _call(b"<value><string>&#X41;</string></value>"),
    "long decimal reference": _call(b"<value><string>&#00000065;</string></value>"),
    "method name with other spaces": (
        b"<methodCall><methodName>\xc2\xa0a.b</methodName></methodCall>"
    ),
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_documents_outside_the_subset_fall_back(name: str) -> None:
    body = FALLBACKS[name]
    assert CODEC._fast_call(body) is None
    check_call(body)


@pytest.mark.parametrize(
    "code",
    [0, 8, 9, 10, 13, 31, 32, 65, 0x7F, 0x85, 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFD, 0xFFFE,
     0xFFFF, 0x10000, 0x10FFFF, 0x110000, 9_999_999],
)
def test_character_references_agree(code: int) -> None:
    for reference in (f"&#{code};", f"&#x{code:x};", f"&#x{code:X};"):
        for where in (b"<value><string>a%sb</string></value>", b"<value>%s</value>"):
            check_call(_call(where % reference.encode()))
        struct = b"<value><struct><member><name>%s</name><value><nil/></value></member></struct>"
        check_call(_call(struct % reference.encode() + b"</value>"))


@pytest.mark.parametrize(
    "text",
    ["20240229T12:00:00", "20230229T12:00:00", "00000101T00:00:00", "99991231T23:59:59.999999Z",
     "20240101T24:00:00", "20240101T23:60:00", "20240101T23:59:60", "20240131T23:59:59.5",
     "20240131T23:59:59+01:00", "2024-01-31T23:59:59", "20240131T235959", "20240131T23:59:59z",
     "20241301T00:00:00", "20240100T00:00:00", "20240132T00:00:00"],
)
def test_datetimes_agree(text: str) -> None:
    check_call(_call(b"<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % text.encode()))


@settings(max_examples=2000, deadline=None)
@given(moment=datetimes)
@example(moment=dt.datetime(1, 1, 1))
@example(moment=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC))
def test_canonical_datetimes_read_as_parse_datetime_reads_them(moment: dt.datetime) -> None:
    text = format_datetime(moment)
    expected = parse_datetime(text)
    body = _call(b"<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % text.encode())
    decoded = CODEC._fast_call(body)
    assert decoded is not None
    (value,) = decoded.params
    assert same(value, expected)
    assert type(value.tzinfo) is type(expected.tzinfo)  # type: ignore[union-attr]


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
    body = CODEC.encode_call("t.x", params)
    codec = XmlRpcCodec(limits=limits)
    check_call(body, codec)
    check_response(CODEC.encode_reply(params), codec)


def test_long_documents_check_string_lengths() -> None:
    codec = XmlRpcCodec(limits=Limits(max_string=100))
    within = CODEC.encode_reply({"a" * 100: ["x" * 100, b"y" * 100, "z" * 50]})
    assert len(within) > 100  # longer than max_string: the fast path checks every string
    assert codec._fast_response(within) is not None
    check_response(within, codec)
    overs: list[Any] = [{"a" * 101: 1}, ["x" * 101], [b"y" * 101], ["&" * 101]]
    for over in overs:
        body = CODEC.encode_reply(over)
        assert codec._fast_response(body) is None
        assert check_response(body, codec)[0] == "error"


# -- mutation fuzzing ----------------------------------------------------------------------------

# Mostly markup and bytes that are outside the fast path's subset, or invalid.
SNIPPETS = [
    b"\r", b"\r\n", b"\x00", b"\x0b", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"&", b"&#0;",
    b"&#xFFFE;", b"&#55296;", b"&bogus;", b"]]>", b">", b"<", b"</", b"/>", b"<!-- c -->",
    b"<?pi x?>", b"<![CDATA[x]]>", b' a="1"', b"<x/>", b"<value>", b"</value>", b"<nil/>",
    b"<int>", b"</int>", b"<string>", b"</string>", b"<struct>", b"</struct>", b"<array>",
    b"<data>", b"</data>", b"<member>", b"</member>", b"<name>", b"</name>", b"<param>",
    b"</param>", b"<params>", b"<fault>", b"<ex:nil/>", b"<!DOCTYPE x>", b"99999999999999999999",
]
# What keeps a document valid, mostly: white space between tags, text and references.
LAYOUT = [b" ", b"\t", b"\n", b"\n  ", b"\r\n", b"\xc2\x85"]
TEXT = [
    b"a", b"0", b"1", b"-", b"+", b".", b"e", b"E", b"Z", b"T", b":", b"=", b" ", b"\t", b"\n",
    b"&amp;", b"&lt;", b"&gt;", b"&quot;", b"&apos;", b"&#13;", b"&#x41;", b"&#x10FFFF;",
    b"&#128512;", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xef\xbf\xbd", b"\xef\xbf\xbe", b"\x7f",
    b"\xc2\x80",
]
TAGS = [
    b"int", b"i4", b"i8", b"string", b"boolean", b"double", b"base64", b"dateTime.iso8601",
    b"nil", b"value", b"struct", b"array", b"member", b"name", b"data", b"param", b"ex:i8",
]


def mutations(body: bytes) -> st.SearchStrategy[bytes]:
    return fastpath.mutations(body, snippets=SNIPPETS, layout=LAYOUT, text=TEXT, tags=TAGS)


VALID = [case.body for case in codec_cases("xmlrpc") if not case.kind.startswith("invalid")]
VALID += [
    CODEC.encode_call("election.vote", [SAMPLE_VOTE]),
    CODEC.encode_reply(SAMPLE_VOTE),
    CODEC.encode_reply([{"a": [1, "x&y", b"z"]}, [], {}]),
    xmlrpc.client.dumps(({"a": [1, 2.5, None, b"x" * 60]},), "t.x", allow_none=True).encode(),
    xmlrpc.client.dumps(([True, "s<&>"],), methodresponse=True, allow_none=True).encode(),
]
generated_bodies = st.one_of(
    st.sampled_from(VALID),
    st.lists(values(max_leaves=8), max_size=2).map(lambda p: CODEC.encode_call("t.x", p)),
    values(max_leaves=8).map(CODEC.encode_reply),
    st.lists(stdlib_values, max_size=2).map(
        lambda p: xmlrpc.client.dumps(tuple(p), "t.x", allow_none=True).encode()
    ),
)


@FUZZ
@given(data=st.data())
def test_mutated_documents_agree(data: st.DataObject) -> None:
    body = data.draw(generated_bodies)
    mutated = data.draw(mutations(body))
    check_call(mutated)
    check_response(mutated)
    if b"<methodCall>" in mutated and CODEC._fast_call(mutated) is not None:
        event("fast path took the mutated call")


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
    codec = XmlRpcCodec(limits=limits)
    mutated = data.draw(mutations(body))
    check_call(mutated, codec)
    check_response(mutated, codec)
