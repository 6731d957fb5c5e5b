"""Plugin registries: classes found through entry points, looked up by name or wire id.

Codecs (``clusterrpc.codecs``) and authentication schemes (``clusterrpc.auth``) are both plugins:
every entry point in the group names a class, the entry point's name must equal the class's
``name``, and the class carries a one-byte wire id. Built-ins are registered the same way as
third-party plugins, through clusterrpc's own entry points.

A registry is immutable once built. Two plugins claiming the same name or wire id make discovery
fail loudly — a silent winner could let a packet be handled by the wrong plugin. A plugin that
fails to import is recorded instead, and asking for it by name raises
:class:`~clusterrpc.errors.ConfigurationError` carrying the import error, while every other
plugin stays usable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import ClassVar, Generic, TypeVar

from clusterrpc.errors import ConfigurationError

__all__ = ["PluginRegistry"]

_PLUGIN_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}\Z")

P = TypeVar("P")


class PluginRegistry(Generic[P]):
    """An immutable set of plugin classes of one kind, by name and by wire id.

    Subclasses set ``kind`` (for messages), ``group`` (the entry-point group), ``base`` (the
    class every plugin must subclass), ``id_attribute`` and ``id_range``, and
    ``unknown_error`` (raised for names and ids that are not registered).
    """

    kind: ClassVar[str]
    group: ClassVar[str]
    base: ClassVar[type]
    id_attribute: ClassVar[str]
    id_range: ClassVar[range]
    unknown_error: ClassVar[type[ConfigurationError]]

    __slots__ = ("_broken", "_by_id", "_by_name", "_origins")

    def __init__(
        self,
        plugins: Iterable[type[P]],
        *,
        origins: Mapping[str, str] | None = None,
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self._by_name: dict[str, type[P]] = {}
        self._by_id: dict[int, type[P]] = {}
        self._origins: dict[str, str] = {}
        origins = origins or {}
        for cls in plugins:
            name = getattr(cls, "name", "")
            origin = origins.get(name, f"{cls.__module__}:{cls.__qualname__}")
            self.check_class(cls, origin)
            wire_id = self.wire_id(cls)
            for what, key, other in (
                ("name", name, self._by_name.get(name)),
                ("wire id", wire_id, self._by_id.get(wire_id)),
            ):
                if other is not None and other is not cls:
                    raise ConfigurationError(
                        f"{self.kind} {what} {key!r} is claimed twice: by "
                        f"{self._origins[self.name_of(other)]} and by {origin}; "
                        "uninstall one of them"
                    )
            self._by_name[name] = cls
            self._by_id[wire_id] = cls
            self._origins[name] = origin
        self._broken = dict(broken or {})

    # -- hooks for subclasses ------------------------------------------------------------------

    def check_class(self, cls: object, origin: str) -> None:
        """Raise :class:`ConfigurationError` unless ``cls`` is a valid plugin class."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigurationError(
                f"{origin}: {cls!r} is not a {self.base.__module__}.{self.base.__qualname__} "
                "subclass"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _PLUGIN_NAME.match(name):
            raise ConfigurationError(
                f"{origin}: {self.kind} name {name!r} must be 1-32 characters of a-z 0-9 _ . -"
            )
        wire_id = getattr(cls, self.id_attribute, None)
        if type(wire_id) is not int or wire_id not in self.id_range:
            low, high = self.id_range.start, self.id_range.stop - 1
            raise ConfigurationError(
                f"{origin}: {self.id_attribute} {wire_id!r} must be an int in {low}..{high}"
            )

    @staticmethod
    def name_of(plugin: type[P]) -> str:
        name: str = plugin.name  # type: ignore[attr-defined]
        return name

    def wire_id(self, cls: type[P]) -> int:
        wire_id: int = getattr(cls, self.id_attribute)
        return wire_id

    # -- discovery -----------------------------------------------------------------------------

    @classmethod
    def discover(cls, entry_points: Iterable[object] | None = None) -> tuple[
        list[type[P]], dict[str, str], dict[str, str]
    ]:
        """Load every entry point of the group: ``(classes, origins, broken)``."""
        if entry_points is None:
            # Imported here: importlib.metadata pulls in email and socket, and the sans-I/O
            # layers must import without any I/O module.
            from importlib import metadata  # noqa: PLC0415

            entry_points = metadata.entry_points(group=cls.group)
        classes: list[type[P]] = []
        origins: dict[str, str] = {}
        broken: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        for entry in entry_points:
            name, value = entry.name, entry.value  # type: ignore[attr-defined]
            dist = entry.dist.name if entry.dist is not None else "?"  # type: ignore[attr-defined]
            # The same distribution can be visible twice on sys.path (an editable install next
            # to a source tree); one entry point is one plugin, not a conflict.
            if (name, value) in seen:
                continue
            seen.add((name, value))
            origin = f"entry point {name!r} = {value!r} (from {dist})"
            try:
                loaded = entry.load()  # type: ignore[attr-defined]
            except Exception as error:  # a broken plugin must not take the others down
                broken[name] = f"{origin} failed to load: {type(error).__name__}: {error}"
                continue
            if getattr(loaded, "name", None) != name:
                raise ConfigurationError(
                    f"{origin}: entry-point name differs from the {cls.kind}'s name "
                    f"{getattr(loaded, 'name', None)!r}"
                )
            classes.append(loaded)
            origins[name] = origin
        return classes, origins, broken

    # -- lookups -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The registered names, sorted by wire id."""
        return [self.name_of(c) for c in sorted(self._by_name.values(), key=self.wire_id)]

    def origin(self, name: str) -> str:
        """Where the plugin ``name`` came from (entry point and distribution)."""
        self.by_name(name)
        return self._origins[name]

    def by_name(self, name: str) -> type[P]:
        """The class registered as ``name``; raises ``unknown_error``, or
        :class:`ConfigurationError` if that plugin failed to load."""
        try:
            return self._by_name[name]
        except KeyError:
            if name in self._broken:
                raise ConfigurationError(self._broken[name]) from None
            known = ", ".join(self.names()) or "none"
            hint = ""
            if not self._by_name:
                hint = (
                    f" (no {self.kind} is installed at all: clusterrpc must be installed, e.g. "
                    "`pip install .`, for its entry points to exist)"
                )
            raise self.unknown_error(
                f"unknown {self.kind} {name!r}; installed: {known}{hint}"
            ) from None

    def by_id(self, wire_id: int) -> type[P]:
        """The class with wire id ``wire_id``; raises ``unknown_error``."""
        try:
            return self._by_id[wire_id]
        except KeyError:
            raise self.unknown_error(f"unknown {self.kind} id {wire_id!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.names()}>"
