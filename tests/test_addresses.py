"""Endpoint URLs (no sockets: parsing only)."""

from __future__ import annotations

import pytest

from clusterrpc.errors import ConfigurationError
from clusterrpc.transports import Address, parse_address


@pytest.mark.parametrize(
    ("url", "expected", "canonical"),
    [
        ("tcp://127.0.0.1:7400", Address("tcp", "127.0.0.1", 7400), None),
        ("tcp://localhost:0", Address("tcp", "localhost", 0), None),
        ("TCP://[::1]:7400", Address("tcp", "::1", 7400), "tcp://[::1]:7400"),
        ("unix:///run/clusterrpc/ORG/SYSTEM.sock",
         Address("unix", path="/run/clusterrpc/ORG/SYSTEM.sock"), None),
        ("udp://127.0.0.1:7400", Address("udp", "127.0.0.1", 7400), None),
        ("udp://239.192.0.1:7401?iface=127.0.0.1",
         Address("udp", "239.192.0.1", 7401, iface="127.0.0.1", ttl=1),
         "udp://239.192.0.1:7401?iface=127.0.0.1&ttl=1"),
        ("udp://[ff02::1]:7401?iface=::1&ttl=0",
         Address("udp", "ff02::1", 7401, iface="::1", ttl=0),
         "udp://[ff02::1]:7401?iface=::1&ttl=0"),
        ("http://127.0.0.1:8080/RPC2", Address("http", "127.0.0.1", 8080, "/RPC2"), None),
        ("http://127.0.0.1", Address("http", "127.0.0.1", 80, "/RPC2"),
         "http://127.0.0.1:80/RPC2"),
        ("https://node1.example", Address("https", "node1.example", 443, "/RPC2"),
         "https://node1.example:443/RPC2"),
    ],
)  # fmt: skip
def test_valid_addresses(url: str, expected: Address, canonical: str | None) -> None:
    address = parse_address(url)
    assert address == expected
    assert str(address) == (canonical or url)
    assert parse_address(str(address)) == address  # the canonical form parses back


def test_properties() -> None:
    assert parse_address("tcp://127.0.0.1:1").stream
    assert parse_address("unix:///x").stream
    assert not parse_address("udp://127.0.0.1:1").stream
    assert parse_address("udp://239.1.2.3:1?iface=127.0.0.1").multicast
    assert not parse_address("udp://127.0.0.1:1").multicast


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host:1", "scheme must be one of"),
        ("127.0.0.1:7400", "scheme must be one of"),
        ("tcp://127.0.0.1", "a port is required"),
        ("tcp://:7400", "a host is required"),
        ("tcp://127.0.0.1:99999", "out of range"),
        ("tcp://127.0.0.1:x", "Port could not be cast"),
        ("tcp://127.0.0.1:1/path", "have no path"),
        ("tcp://127.0.0.1:1?iface=x", "only multicast groups take a query"),
        ("unix://relative/path", "unix:///absolute/path"),
        ("unix:///x?y=1", "no host or query"),
        ("udp://239.192.0.1:7401", "needs exactly one ?iface=ADDRESS"),
        ("udp://239.192.0.1:7401?iface=eth0", "iface must be an interface's IP address"),
        ("udp://239.192.0.1:7401?iface=127.0.0.1&ttl=256", "ttl must be one integer"),
        ("udp://239.192.0.1:7401?iface=127.0.0.1&loop=1", "unknown parameter(s) loop"),
        ("http://127.0.0.1/RPC2?x=1", "takes no query"),
        ("tcp://user@127.0.0.1:1", "user names"),
    ],
)
def test_invalid_addresses(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_address(url)
    assert message in str(caught.value)
    assert url in str(caught.value)


def test_not_a_string() -> None:
    with pytest.raises(ConfigurationError, match="must be a URL string"):
        parse_address(7400)  # type: ignore[arg-type]
