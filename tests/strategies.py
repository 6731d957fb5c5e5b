"""Hypothesis strategies for the value model (``clusterrpc.values``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from clusterrpc.values import INT64_MAX, INT64_MIN, same_value

# Characters XML 1.0 can carry (clusterrpc.values: the rule every codec enforces).
xml_chars = st.one_of(
    st.sampled_from("\t\n\r"),
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFD),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
)
texts = st.text(alphabet=xml_chars, max_size=40)

offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
datetimes = st.datetimes(
    min_value=dt.datetime(1, 1, 1, 0, 0, 0),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59),
    # hypothesis's overloads have no case for bounds with optional zones (aware or naive)
    timezones=st.none() | st.just(dt.UTC) | offsets,  # type: ignore[arg-type]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.binary(max_size=64),
    datetimes,
)


def values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any value of the model: decoded form (lists, not tuples; bytes, not bytearray)."""
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=6)
        | st.dictionaries(texts, children, max_size=6),
        max_leaves=max_leaves,
    )


method_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/",
    min_size=1,
    max_size=40,
)


# The strict comparison of decoded values lives in the package (the CLI's round trip uses it).
same = same_value
