"""``kvstore``: a small key-value store on each node, the built-in service plugin.

Admin tools and other nodes read and write a node's attributes with it
(``clusterrpc call URL kvstore.set role db``). It holds at most ``max_keys`` keys of text
values up to ``max_value_length`` characters, in memory: a restart empties it. With a
``write_token`` (a secret: write-only, never echoed), ``set`` and ``delete`` need the token.
Limits apply to what is written after a reconfiguration; keys already stored stay.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, ClassVar

from clusterrpc import Fault, remote
from clusterrpc.errors import ConfigurationError, FaultCode
from clusterrpc.metadata import Field, PluginMetadata
from clusterrpc.services import ServicePlugin

__all__ = ["KeyValueStore"]


def _check_pattern(pattern: str) -> None:
    try:
        re.compile(pattern, flags=re.ASCII)
    except re.error as error:
        raise ConfigurationError(f"kvstore: key_pattern is not a regular expression: "
                                 f"{error}") from None


class KeyValueStore(ServicePlugin):
    """A small key-value store of this node's attributes."""

    name = "kvstore"
    config_metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="kvstore", type="service", version="1.0",
        short_text="A small key-value store of this node's attributes",
        long_text="Holds text values by key, in memory, for admin tools and other nodes. "
                  "With a write token, set and delete need it.",
        fields=(
            Field(fieldname="max_keys", label="Maximum keys", basictype="integer",
                  minimum=1, maximum=1_000_000, default=1000,
                  short_text="How many keys the store holds at most"),
            Field(fieldname="max_value_length", label="Maximum value length",
                  basictype="integer", minimum=1, maximum=1 << 20, default=4096,
                  short_text="The longest value, in characters"),
            Field(fieldname="key_pattern", label="Key pattern", basictype="string",
                  length=200, default="[A-Za-z0-9_.:/-]{1,128}",
                  short_text="What a key must look like (a regular expression, full match)"),
            Field(fieldname="write_token", label="Write token", basictype="string",
                  secret=True, length=128, regex="[A-Za-z0-9_-]{16,128}",
                  short_text="When set, set and delete need this token",
                  long_text="16 to 128 characters of A-Z a-z 0-9 _ -. Write-only: it is "
                            "never shown, logged or returned."),
            Field(fieldname="owner", label="Owner", basictype="string",
                  specialtype="nodename", short_text="The node whose attributes these are"),
        ),
    )  # fmt: skip

    def __init__(self, config: Any) -> None:
        _check_pattern(config["key_pattern"])
        super().__init__(config)
        self._values: dict[str, str] = {}

    def reconfigure(self, config: Any) -> None:
        """Take new limits, token and pattern at once; keys already stored stay. Raises
        :class:`~clusterrpc.errors.ConfigurationError` for a key pattern that is not a regular
        expression (the old configuration stays)."""
        _check_pattern(config["key_pattern"])
        super().reconfigure(config)

    def _check_writer(self, token: str) -> None:
        expected = self.config.get("write_token")
        # compare_digest: the time taken must not tell how much of a guess was right.
        if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
            raise Fault(FaultCode.FORBIDDEN, "kvstore: a write needs the store's write token")

    def _check_key(self, key: str) -> None:
        if re.fullmatch(self.config["key_pattern"], key, flags=re.ASCII) is None:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"kvstore: key {key[:40]!r} does not match the key pattern")

    @remote
    def get(self, key: str) -> str | None:
        """The value of ``key``, or nil when there is none."""
        return self._values.get(key)

    @remote
    def keys(self) -> list[str]:
        """Every key, sorted."""
        return sorted(self._values)

    @remote
    def set(self, key: str, value: str, token: str = "") -> bool:
        """Store ``value`` under ``key``; true. Faults: -32021 without the write token,
        -32602 for a key that does not match the pattern, a value over the length limit, or a
        new key beyond ``max_keys``."""
        self._check_writer(token)
        self._check_key(key)
        if len(value) > self.config["max_value_length"]:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"kvstore: the value is longer than {self.config['max_value_length']}")
        if key not in self._values and len(self._values) >= self.config["max_keys"]:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"kvstore: full ({self.config['max_keys']} keys)")
        self._values[key] = value
        return True

    @remote
    def delete(self, key: str, token: str = "") -> bool:
        """Remove ``key``; true if it was there. Fault -32021 without the write token."""
        self._check_writer(token)
        return self._values.pop(key, None) is not None

    @remote
    def info(self) -> dict[str, Any]:
        """How full the store is, and its limits (never the token: only whether one is set)."""
        return {"keys": len(self._values), "max_keys": self.config["max_keys"],
                "max_value_length": self.config["max_value_length"],
                "protected": self.config.get("write_token") is not None,
                "owner": self.config.get("owner") or ""}
