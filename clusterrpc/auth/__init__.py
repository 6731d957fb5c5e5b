"""Authentication schemes: how packets are signed, verified and (optionally) encrypted.

Built in: ``none`` (0), ``hmac-sha256`` (1), ``blake2b`` (2), ``ed25519`` (3) and ``secretbox``
(4); see :mod:`clusterrpc.auth.builtin` and ``spec/packet.md``. Plugins register a
:class:`AuthScheme` subclass under the ``clusterrpc.auth`` entry-point group, exactly as the
built-ins do.
"""

from __future__ import annotations

import functools

from clusterrpc.auth.base import AuthScheme, Opener, Sealer
from clusterrpc.errors import UnknownSchemeError
from clusterrpc.plugins import PluginRegistry

__all__ = [
    "ENTRY_POINT_GROUP",
    "AuthScheme",
    "Opener",
    "SchemeRegistry",
    "Sealer",
    "default_schemes",
    "get_scheme",
]

ENTRY_POINT_GROUP = "clusterrpc.auth"


class SchemeRegistry(PluginRegistry[AuthScheme]):
    """An immutable set of authentication schemes, by name and by wire id.

    Lookups raise :class:`~clusterrpc.errors.UnknownSchemeError` for names and ids that are not
    registered.
    """

    kind = "authentication scheme"
    plugin_type = "auth"
    group = ENTRY_POINT_GROUP
    base = AuthScheme
    id_attribute = "scheme_id"
    id_range = range(256)
    unknown_error = UnknownSchemeError

    __slots__ = ()

    @classmethod
    def from_entry_points(cls) -> SchemeRegistry:
        """Discover every scheme installed under ``clusterrpc.auth`` (see
        :mod:`clusterrpc.plugins` for how conflicts and broken plugins are handled)."""
        classes, origins, broken = cls.discover()
        return cls(classes, origins=origins, broken=broken, versions=cls.versions_of())

    def get(self, name_or_id: str | int) -> AuthScheme:
        """An instance of the scheme named ``name_or_id`` (or with that wire id)."""
        if isinstance(name_or_id, int):
            return self.by_id(name_or_id)()
        return self.by_name(name_or_id)()


@functools.cache
def default_schemes() -> SchemeRegistry:
    """The registry of every scheme installed in this environment (built once, then cached)."""
    return SchemeRegistry.from_entry_points()


def get_scheme(name_or_id: str | int) -> AuthScheme:
    """An installed scheme by name or wire id; raises :class:`UnknownSchemeError`."""
    return default_schemes().get(name_or_id)
