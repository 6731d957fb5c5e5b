"""Fixtures of the multi-host lab (``lab.py``): ``make_lab(n)`` builds labs that are torn down
after the test whatever happens, ``lab`` is a three-host lab. Without root, ``ip``, ``nft`` or
the right to create network namespaces, the tests that use them skip and say what is missing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns.lab import Lab, LabUnavailable, unavailable_reason

HERE = Path(__file__).resolve().parent


def require_lab() -> None:
    """Skip the calling test (or fixture) when the lab cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"netns lab unavailable: {reason}")


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """``make_lab(n=3, **kwargs)``: a new :class:`Lab` of ``n`` hosts, closed after the test
    (even a failed one; ``atexit`` is the second line)."""
    labs: list[Lab] = []

    def factory(n: int = 3, **kwargs: Any) -> Lab:
        require_lab()
        try:
            lab = Lab(n, **kwargs)
        except LabUnavailable as error:
            pytest.skip(f"netns lab unavailable: {error}")
        labs.append(lab)
        return lab

    try:
        yield factory
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.close()
            except Exception as error:  # close every lab, then report
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A lab of three hosts, h1 to h3, with no nodes started."""
    return make_lab(3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/netns is marked ``netns`` (``-m netns`` / ``-m "not netns"``)."""
    for item in items:
        if Path(str(item.path)).is_relative_to(HERE):
            item.add_marker(pytest.mark.netns)
