"""The codec registry: codecs by name and by wire id, discovered through entry points.

Built-in codecs and third-party plugins are found the same way: every entry point in the
``clusterrpc.codecs`` group names a :class:`~clusterrpc.codecs.base.Codec` subclass, and the
entry point's name must equal the class's ``name``. A plugin package declares, in its
``pyproject.toml``::

    [project.entry-points."clusterrpc.codecs"]
    rot13 = "clusterrpc_rot13:Rot13Codec"

A registry is immutable once built. Two codecs claiming the same name or wire id make
:meth:`CodecRegistry.from_entry_points` fail loudly (a silent winner could let a packet be decoded
by the wrong codec); a plugin that fails to import is recorded, and asking for it by name raises
:class:`~clusterrpc.errors.ConfigurationError` carrying the import error, while every other codec
stays usable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from clusterrpc.codecs.base import Codec
from clusterrpc.errors import ConfigurationError, UnknownCodecError
from clusterrpc.values import DEFAULT_LIMITS, Limits

__all__ = [
    "ENTRY_POINT_GROUP",
    "CodecRegistry",
    "default_registry",
    "get_codec",
]

ENTRY_POINT_GROUP = "clusterrpc.codecs"
_CODEC_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}\Z")


def _check_codec_class(cls: object, origin: str) -> type[Codec]:
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise ConfigurationError(f"{origin}: {cls!r} is not a clusterrpc Codec subclass")
    name = getattr(cls, "name", None)
    codec_id = getattr(cls, "codec_id", None)
    media_type = getattr(cls, "media_type", None)
    if not isinstance(name, str) or not _CODEC_NAME.match(name):
        raise ConfigurationError(
            f"{origin}: codec name {name!r} must be 1-32 characters of a-z 0-9 _ . -"
        )
    if type(codec_id) is not int or not 1 <= codec_id <= 255:
        raise ConfigurationError(f"{origin}: codec_id {codec_id!r} must be an int in 1..255")
    if not isinstance(media_type, str) or "/" not in media_type:
        raise ConfigurationError(f"{origin}: media_type {media_type!r} is not a MIME type")
    return cls


class CodecRegistry:
    """An immutable set of codec classes, looked up by name or by wire id.

    Build one from explicit classes (``CodecRegistry([MyCodec])``, handy in tests) or from the
    installed entry points (:meth:`from_entry_points`). Lookups raise
    :class:`~clusterrpc.errors.UnknownCodecError` for names and ids that are not registered.
    """

    __slots__ = ("_broken", "_by_id", "_by_name", "_origins")

    def __init__(
        self,
        codecs: Iterable[type[Codec]],
        *,
        origins: Mapping[str, str] | None = None,
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self._by_name: dict[str, type[Codec]] = {}
        self._by_id: dict[int, type[Codec]] = {}
        self._origins: dict[str, str] = {}
        origins = origins or {}
        for cls in codecs:
            origin = origins.get(
                getattr(cls, "name", ""), f"{cls.__module__}:{cls.__qualname__}"
            )
            _check_codec_class(cls, origin)
            for what, key, other in (
                ("name", cls.name, self._by_name.get(cls.name)),
                ("wire id", cls.codec_id, self._by_id.get(cls.codec_id)),
            ):
                if other is not None and other is not cls:
                    raise ConfigurationError(
                        f"codec {what} {key!r} is claimed twice: by "
                        f"{self._origins[other.name]} and by {origin}; uninstall one of them"
                    )
            self._by_name[cls.name] = cls
            self._by_id[cls.codec_id] = cls
            self._origins[cls.name] = origin
        self._broken = dict(broken or {})

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> CodecRegistry:
        """Discover every codec installed under the entry-point ``group``.

        Raises :class:`~clusterrpc.errors.ConfigurationError` when two codecs claim the same name
        or id, or an entry point's name differs from its class's ``name``. A plugin that fails to
        import does not stop the others; see :meth:`create`.
        """
        # Imported here, not at module level: importlib.metadata pulls in email and socket, and
        # the codec layer must stay importable without any I/O module (sans-I/O rule).
        from importlib import metadata  # noqa: PLC0415

        classes: list[type[Codec]] = []
        origins: dict[str, str] = {}
        broken: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        for entry in metadata.entry_points(group=group):
            dist = entry.dist.name if entry.dist is not None else "?"
            # The same distribution can be visible twice on sys.path (e.g. an editable install
            # next to a source tree); one entry point is one codec, not a conflict.
            if (entry.name, entry.value) in seen:
                continue
            seen.add((entry.name, entry.value))
            origin = f"entry point {entry.name!r} = {entry.value!r} (from {dist})"
            try:
                loaded = entry.load()
            except Exception as error:  # a broken plugin must not take the others down
                broken[entry.name] = f"{origin} failed to load: {type(error).__name__}: {error}"
                continue
            codec_cls = _check_codec_class(loaded, origin)
            if codec_cls.name != entry.name:
                raise ConfigurationError(
                    f"{origin}: entry-point name differs from the codec's name "
                    f"{codec_cls.name!r}"
                )
            classes.append(codec_cls)
            origins[codec_cls.name] = origin
        return cls(classes, origins=origins, broken=broken)

    def names(self) -> list[str]:
        """The registered codec names, sorted by wire id."""
        return [cls.name for cls in sorted(self._by_name.values(), key=lambda c: c.codec_id)]

    def origin(self, name: str) -> str:
        """Where the codec ``name`` came from (entry point and distribution)."""
        self.by_name(name)
        return self._origins[name]

    def by_name(self, name: str) -> type[Codec]:
        """The codec class registered as ``name``; raises :class:`UnknownCodecError`."""
        try:
            return self._by_name[name]
        except KeyError:
            if name in self._broken:
                raise ConfigurationError(self._broken[name]) from None
            known = ", ".join(self.names()) or "none"
            hint = ""
            if not self._by_name:
                hint = (
                    " (no codec is installed at all: clusterrpc must be installed, e.g. "
                    "`pip install .`, for its entry points to exist)"
                )
            raise UnknownCodecError(
                f"unknown codec {name!r}; installed: {known}{hint}"
            ) from None

    def by_id(self, codec_id: int) -> type[Codec]:
        """The codec class with wire id ``codec_id``; raises :class:`UnknownCodecError`."""
        try:
            return self._by_id[codec_id]
        except KeyError:
            raise UnknownCodecError(f"unknown codec id {codec_id!r}") from None

    def create(self, name_or_id: str | int, *, limits: Limits = DEFAULT_LIMITS) -> Codec:
        """Instantiate the codec named ``name_or_id`` (or with that wire id) with ``limits``.

        Raises :class:`UnknownCodecError` if there is none, and
        :class:`~clusterrpc.errors.ConfigurationError` if that plugin failed to load.
        """
        if isinstance(name_or_id, int):
            return self.by_id(name_or_id)(limits=limits)
        return self.by_name(name_or_id)(limits=limits)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"<CodecRegistry {self.names()}>"


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
