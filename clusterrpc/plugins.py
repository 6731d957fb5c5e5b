"""Plugin registries: classes found through entry points, looked up by name or wire id.

One mechanism serves every plugin type — the framework paper's PluginHandler. Each type has an
entry-point group and a registry class (a :class:`PluginRegistry` subclass) that loads and
validates its plugins:

=========  =======================  ================================================  =========
type       entry-point group        registry                                          wire id
=========  =======================  ================================================  =========
codec      ``clusterrpc.codecs``    :class:`clusterrpc.codecs.registry.CodecRegistry`  codec_id
auth       ``clusterrpc.auth``      :class:`clusterrpc.auth.SchemeRegistry`            scheme_id
service    ``clusterrpc.services``  :class:`clusterrpc.services.ServicePluginRegistry` none
=========  =======================  ================================================  =========

Every entry point in a group names a class, the entry point's name must equal the class's
``name``, and a type that travels on the wire gives each class a one-byte wire id. Built-ins
are registered the same way as third-party plugins, through clusterrpc's own entry points.
:func:`plugin_types` returns the installed registries by type; a later type adds its row.

Each plugin describes its configuration with a :class:`~clusterrpc.metadata.PluginMetadata`
in the class attribute ``config_metadata`` (``spec/metadata.md``); a plugin without one takes
no configuration and gets a model with no fields, named after it and described by the first
line of its docstring. The model is checked when the plugin registers: its name and type must
be the plugin's, and its regexes within the subset Python and ECMA-262 share.

A registry is immutable once built. Two plugins claiming the same name or wire id make discovery
fail loudly — a silent winner could let a packet be handled by the wrong plugin. A plugin that
fails to import is recorded instead, and asking for it by name raises
:class:`~clusterrpc.errors.ConfigurationError` carrying the import error, while every other
plugin stays usable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from clusterrpc.errors import ConfigurationError

if TYPE_CHECKING:
    from clusterrpc.metadata import PluginMetadata

__all__ = ["PluginRegistry", "describe_plugin", "find_plugin", "list_plugins", "plugin_types"]

_PLUGIN_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}\Z")

P = TypeVar("P")


class PluginRegistry(Generic[P]):
    """An immutable set of plugin classes of one kind, by name and by wire id.

    Subclasses set ``kind`` (for messages), ``plugin_type`` (the short name of the type:
    ``codec``, ``auth``, ``service``; what ``PluginMetadata.type`` says), ``group`` (the
    entry-point group), ``base`` (the class every plugin must subclass), ``id_attribute`` and
    ``id_range`` (``id_attribute = None`` for a type with no wire id), and ``unknown_error``
    (raised for names and ids that are not registered).
    """

    kind: ClassVar[str]
    plugin_type: ClassVar[str]
    group: ClassVar[str]
    base: ClassVar[type]
    id_attribute: ClassVar[str | None]
    id_range: ClassVar[range] = range(0)
    unknown_error: ClassVar[type[ConfigurationError]]

    __slots__ = ("_broken", "_by_id", "_by_name", "_metadata", "_origins", "_versions")

    def __init__(
        self,
        plugins: Iterable[type[P]],
        *,
        origins: Mapping[str, str] | None = None,
        broken: Mapping[str, str] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self._by_name: dict[str, type[P]] = {}
        self._by_id: dict[int, type[P]] = {}
        self._origins: dict[str, str] = {}
        self._metadata: dict[str, PluginMetadata] = {}
        self._versions = dict(versions or {})
        origins = origins or {}
        for cls in plugins:
            name = getattr(cls, "name", "")
            origin = origins.get(name, f"{cls.__module__}:{cls.__qualname__}")
            self.check_class(cls, origin)
            claims: list[tuple[str, object, type[P] | None]] = [
                ("name", name, self._by_name.get(name))]
            wire_id = self.wire_id(cls) if self.id_attribute is not None else None
            if wire_id is not None:
                claims.append(("wire id", wire_id, self._by_id.get(wire_id)))
            for what, key, other in claims:
                if other is not None and other is not cls:
                    raise ConfigurationError(
                        f"{self.kind} {what} {key!r} is claimed twice: by "
                        f"{self._origins[self.name_of(other)]} and by {origin}; "
                        "uninstall one of them"
                    )
            if getattr(cls, "config_metadata", None) is not None:
                self._metadata[name] = self._check_metadata(cls, name, origin)
            self._by_name[name] = cls
            if wire_id is not None:
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
        if self.id_attribute is None:
            return
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
        """The plugin's wire id; raises :class:`ConfigurationError` for a type without."""
        if self.id_attribute is None:
            raise ConfigurationError(f"a {self.kind} has no wire id")
        wire_id: int = getattr(cls, self.id_attribute)
        return wire_id

    def _check_metadata(self, cls: type[P], name: str, origin: str) -> PluginMetadata:
        """The plugin's configuration model: its ``config_metadata``, checked, or a model
        with no fields. Raises :class:`ConfigurationError` for one that is not a
        :class:`~clusterrpc.metadata.PluginMetadata`, or names another plugin or type."""
        from clusterrpc.metadata import PluginMetadata  # noqa: PLC0415 - no cycle at import

        declared = getattr(cls, "config_metadata", None)
        if declared is None:
            doc = (cls.__doc__ or "").strip().splitlines()
            return PluginMetadata(name=name, type=self.plugin_type,
                                  version=self._versions.get(name, "0"),
                                  short_text=doc[0].rstrip(".") if doc else name,
                                  long_text="", fields=())
        if not isinstance(declared, PluginMetadata):
            raise ConfigurationError(f"{origin}: config_metadata must be a "
                                     f"clusterrpc.metadata.PluginMetadata, not {declared!r}")
        if declared.name != name or declared.type != self.plugin_type:
            raise ConfigurationError(
                f"{origin}: config_metadata describes {declared.type} {declared.name!r}, "
                f"not {self.plugin_type} {name!r}")
        return declared

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

    @classmethod
    def versions_of(cls, entry_points: Iterable[object] | None = None) -> dict[str, str]:
        """The version of the distribution each plugin of the group comes from, by name (what
        a plugin without its own ``config_metadata`` reports as its version)."""
        if entry_points is None:
            from importlib import metadata  # noqa: PLC0415 - see discover()

            entry_points = metadata.entry_points(group=cls.group)
        found: dict[str, str] = {}
        for entry in entry_points:
            dist = getattr(entry, "dist", None)
            if dist is not None:
                found.setdefault(entry.name, dist.version)  # type: ignore[attr-defined]
        return found

    # -- lookups -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """The registered names, sorted by wire id (by name for a type without wire ids)."""
        if self.id_attribute is None:
            return sorted(self._by_name)
        return [self.name_of(c) for c in sorted(self._by_name.values(), key=self.wire_id)]

    def metadata(self, name: str) -> PluginMetadata:
        """The configuration model of the plugin ``name`` (module docstring); raises as
        :meth:`by_name` does."""
        cls = self.by_name(name)
        if name not in self._metadata:  # no config_metadata: built on first use
            self._metadata[name] = self._check_metadata(cls, name, self._origins[name])
        return self._metadata[name]

    def broken(self) -> dict[str, str]:
        """The plugins of the group that failed to load: name → why."""
        return dict(self._broken)

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


def plugin_types() -> dict[str, PluginRegistry[object]]:
    """The installed plugins of every type, by type name (``codec``, ``auth``, ``service``):
    each type's default registry, built once per process from the entry points. Raises
    :class:`ConfigurationError` when a group's plugins conflict (see :class:`PluginRegistry`)."""
    from clusterrpc.auth import default_schemes  # noqa: PLC0415 - the registries import us
    from clusterrpc.codecs.registry import default_registry  # noqa: PLC0415
    from clusterrpc.services import default_services  # noqa: PLC0415

    registries: list[PluginRegistry[object]] = [
        default_registry(), default_schemes(), default_services()]  # type: ignore[list-item]
    return {registry.plugin_type: registry for registry in registries}


def find_plugin(name: str, plugin_type: str = "") -> tuple[str, PluginMetadata]:
    """The type and metadata of the installed plugin ``name`` (of ``plugin_type``, when given
    or when two types share the name). Raises :class:`ConfigurationError` naming what is
    installed for an unknown or ambiguous name, an unknown type, or a plugin that failed to
    load."""
    registries = plugin_types()
    if plugin_type:
        if plugin_type not in registries:
            raise ConfigurationError(f"unknown plugin type {plugin_type!r} "
                                     f"(types: {', '.join(sorted(registries))})")
        registries = {plugin_type: registries[plugin_type]}
    found = [kind for kind, registry in registries.items() if name in registry]
    if len(found) > 1:
        raise ConfigurationError(f"{name!r} is a plugin of several types "
                                 f"({', '.join(sorted(found))}): name the type")
    if not found:
        for registry in registries.values():
            if name in registry.broken():
                raise ConfigurationError(registry.broken()[name])
        known = sorted(f"{kind}:{each}" for kind, registry in registries.items()
                       for each in registry.names())
        raise ConfigurationError(f"no plugin {name!r} is installed; installed: "
                                 f"{', '.join(known) or 'none'}")
    return found[0], registries[found[0]].metadata(name)


def list_plugins() -> list[dict[str, str]]:
    """Every installed plugin of every type: ``type``, ``name``, ``version``, ``short_text``,
    ``origin`` (entry point and distribution), ``error`` (why it failed to load, or "").
    Sorted by type, then name. Served as ``system.listPlugins``."""
    rows: list[dict[str, str]] = []
    for kind, registry in sorted(plugin_types().items()):
        for name in sorted(registry.names()):
            meta = registry.metadata(name)
            rows.append({"type": kind, "name": name, "version": meta.version,
                         "short_text": meta.short_text, "origin": registry.origin(name),
                         "error": ""})
        for name, why in sorted(registry.broken().items()):
            rows.append({"type": kind, "name": name, "version": "", "short_text": "",
                         "origin": "", "error": why})
    return rows


def describe_plugin(name: str, type: str = "") -> dict[str, object]:
    """The configuration metadata of the installed plugin ``name`` as an XML-RPC struct
    (``spec/metadata.md``, "As a value"), from which a remote GUI builds a form; ``type``
    names the plugin type when two types share a name. Served as ``system.describePlugin``;
    a fault -32602 for an unknown, ambiguous or broken plugin. Secrets have no default."""
    from clusterrpc.errors import Fault, FaultCode  # noqa: PLC0415

    try:
        _, meta = find_plugin(name, type)
    except ConfigurationError as error:
        raise Fault(FaultCode.INVALID_PARAMS, str(error)) from None
    return meta.to_value()
