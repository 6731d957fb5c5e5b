"""The codec registry: codecs by name and by wire id, discovered through entry points.

Built-in codecs and third-party plugins are found the same way (:mod:`clusterrpc.plugins`):
every entry point in the ``clusterrpc.codecs`` group names a
:class:`~clusterrpc.codecs.base.Codec` subclass, and the entry point's name must equal the class's
``name``. A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."clusterrpc.codecs"]
    rot13 = "clusterrpc_rot13:Rot13Codec"
"""

from __future__ import annotations

import functools

from clusterrpc.codecs.base import Codec
from clusterrpc.errors import ConfigurationError, UnknownCodecError
from clusterrpc.plugins import PluginRegistry
from clusterrpc.values import DEFAULT_LIMITS, Limits

__all__ = [
    "ENTRY_POINT_GROUP",
    "CodecRegistry",
    "default_registry",
    "get_codec",
]

ENTRY_POINT_GROUP = "clusterrpc.codecs"


class CodecRegistry(PluginRegistry[Codec]):
    """An immutable set of codec classes, looked up by name or by wire id.

    Build one from explicit classes (``CodecRegistry([MyCodec])``, handy in tests) or from the
    installed entry points (:meth:`from_entry_points`). Lookups raise
    :class:`~clusterrpc.errors.UnknownCodecError` for names and ids that are not registered.
    """

    kind = "codec"
    plugin_type = "codec"
    group = ENTRY_POINT_GROUP
    base = Codec
    id_attribute = "codec_id"
    id_range = range(1, 256)
    unknown_error = UnknownCodecError

    __slots__ = ()

    def check_class(self, cls: object, origin: str) -> None:
        super().check_class(cls, origin)
        media_type = getattr(cls, "media_type", None)
        if not isinstance(media_type, str) or "/" not in media_type:
            raise ConfigurationError(f"{origin}: media_type {media_type!r} is not a MIME type")

    @classmethod
    def from_entry_points(cls) -> CodecRegistry:
        """Discover every codec installed under ``clusterrpc.codecs``.

        Raises :class:`~clusterrpc.errors.ConfigurationError` when two codecs claim the same name
        or id, or an entry point's name differs from its class's ``name``. A plugin that fails to
        import does not stop the others; see :meth:`create`.
        """
        classes, origins, broken = cls.discover()
        return cls(classes, origins=origins, broken=broken, versions=cls.versions_of())

    def create(self, name_or_id: str | int, *, limits: Limits = DEFAULT_LIMITS) -> Codec:
        """Instantiate the codec named ``name_or_id`` (or with that wire id) with ``limits``.

        Raises :class:`UnknownCodecError` if there is none, and
        :class:`~clusterrpc.errors.ConfigurationError` if that plugin failed to load.
        """
        if isinstance(name_or_id, int):
            return self.by_id(name_or_id)(limits=limits)
        return self.by_name(name_or_id)(limits=limits)


@functools.cache
def default_registry() -> CodecRegistry:
    """The registry of every codec installed in this environment (built once, then cached).

    Installing a plugin into a running process needs a fresh
    :meth:`CodecRegistry.from_entry_points`.
    """
    return CodecRegistry.from_entry_points()


def get_codec(name_or_id: str | int = "xmlrpc", *, limits: Limits = DEFAULT_LIMITS) -> Codec:
    """Create an installed codec by name or wire id (default: ``xmlrpc``).

    Raises :class:`UnknownCodecError` for unknown names and ids.
    """
    return default_registry().create(name_or_id, limits=limits)
