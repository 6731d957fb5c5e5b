"""The value model: limits, validation, datetimes, and the public surface."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from hypothesis import given

import clusterrpc
from clusterrpc.errors import ConfigurationError, DecodeError, EncodeError
from clusterrpc.values import Limits, check_value, format_datetime, parse_datetime
from tests.strategies import datetimes, same


@pytest.mark.parametrize("field", ["max_size", "max_depth", "max_items", "max_string"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_limits_must_be_positive_ints(field: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Limits(**{field: bad})  # type: ignore[arg-type]


def test_limits_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Limits(10)  # type: ignore[call-arg]
    limits = Limits()
    with pytest.raises(AttributeError):
        limits.max_size = 1  # type: ignore[misc]


def test_check_value_counts_items() -> None:
    assert check_value({"a": [1, 2], "b": None}, Limits(), "value") == 5


def test_check_value_path_escapes_keys() -> None:
    with pytest.raises(EncodeError) as caught:
        check_value({'we"ird': [{1, 2}]}, Limits(), "value")
    assert caught.value.path == 'value["we\\"ird"][0]'
    assert caught.value.reason == "cannot encode a set"


@given(moment=datetimes)
def test_datetime_text_round_trip(moment: dt.datetime) -> None:
    assert same(parse_datetime(format_datetime(moment)), moment)


def test_datetime_formats() -> None:
    assert format_datetime(dt.datetime(33, 1, 2, 3, 4, 5)) == "00330102T03:04:05"
    assert format_datetime(dt.datetime(2024, 1, 2, tzinfo=dt.UTC)) == "20240102T00:00:00Z"
    offset = dt.timezone(dt.timedelta(hours=5, minutes=45, seconds=30))
    assert format_datetime(dt.datetime(2024, 1, 2, tzinfo=offset)) == "20240102T00:00:00+05:45:30"
    assert parse_datetime("2024-01-02T03:04:05.123456789-0130") == dt.datetime(
        2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone(-dt.timedelta(hours=1, minutes=30))
    )
    bad_texts = [
        "20240230T00:00:00", "2024-01-02", "20240102T24:00:00", "x", "20240102T00:00:00+25"
    ]
    for bad in bad_texts:
        with pytest.raises(DecodeError):
            parse_datetime(bad)


def test_sub_second_utc_offsets_are_refused() -> None:
    odd = dt.timezone(dt.timedelta(microseconds=5))
    with pytest.raises(EncodeError, match="whole seconds"):
        check_value(dt.datetime(2024, 1, 1, tzinfo=odd), Limits(), "value")


def test_public_names() -> None:
    assert set(clusterrpc.__all__) >= {
        "ClusterRPCError", "ConfigurationError", "DecodeError", "EncodeError", "Fault",
        "FaultCode", "LimitExceededError", "Limits", "UnknownCodecError", "Value", "Keyring",
        "AuthenticationError", "PacketError",
    }
    for name in clusterrpc.__all__:
        assert hasattr(clusterrpc, name), name


def test_fault_is_comparable_and_readable() -> None:
    fault = clusterrpc.Fault(-32601, "no such method")
    assert fault == clusterrpc.Fault(-32601, "no such method")
    assert str(fault) == "fault -32601: no such method"
    assert isinstance(fault, clusterrpc.ClusterRPCError)


def test_core_does_no_io() -> None:
    """Importing the sans-I/O layers must not pull in sockets, threads or the event loop."""
    code = (
        "import sys, clusterrpc, clusterrpc.codecs, clusterrpc.codecs.xmlrpc, "
        "clusterrpc.codecs.compact, clusterrpc.codecs.json, clusterrpc.packet, "
        "clusterrpc.replay, clusterrpc.envelope, clusterrpc.auth.builtin\n"
        "bad = {'socket', 'asyncio', 'threading', 'selectors'} & set(sys.modules)\n"
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
