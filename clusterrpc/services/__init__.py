"""Service plugins: remote services a node runs because its ``node.toml`` names them.

A service plugin is a class installed under the entry-point group ``clusterrpc.services``
(the same mechanism as codecs and authentication schemes, :mod:`clusterrpc.plugins`). It
subclasses :class:`ServicePlugin`, has a ``name``, describes its configuration in
``config_metadata`` (a :class:`~clusterrpc.metadata.PluginMetadata`), and publishes its
``@remote``/``@oneway`` methods as ``NAME.method`` when the daemon serves it.

The daemon (``clusterrpc daemon``) serves each plugin that has a ``[plugins.NAME]`` table:
the table is validated against the plugin's metadata — every problem reported with its field
path, before anything listens — then defaults are filled in and ``Plugin(config)`` is
created. On SIGHUP a changed table is validated again and handed to
:meth:`ServicePlugin.reconfigure`; so is one submitted through ``plugins.configure`` (the web
console's forms).

Writing one::

    from clusterrpc import remote
    from clusterrpc.metadata import Field, PluginMetadata
    from clusterrpc.services import ServicePlugin

    class Greeter(ServicePlugin):
        \"\"\"Greets callers.\"\"\"

        name = "greeter"
        config_metadata = PluginMetadata(
            name="greeter", type="service", version="1.0", short_text="Greets callers",
            fields=(Field(fieldname="greeting", label="Greeting", basictype="string",
                          length=40, default="hello"),))

        @remote
        def greet(self, who: str) -> str:
            return f"{self.config['greeting']}, {who}"

    # pyproject.toml: [project.entry-points."clusterrpc.services"] greeter = "pkg:Greeter"
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from clusterrpc.errors import ConfigurationError
from clusterrpc.plugins import PluginRegistry

__all__ = ["ENTRY_POINT_GROUP", "ServicePlugin", "ServicePluginRegistry", "default_services"]

ENTRY_POINT_GROUP = "clusterrpc.services"


class ServicePlugin:
    """Base class of service plugins (module docstring).

    ``config`` is the plugin's configuration, already validated against ``config_metadata``
    and with its defaults filled in; it is kept as :attr:`config`. A plugin that reads
    :attr:`config` when it needs a value is reconfigured live by the default
    :meth:`reconfigure`.
    """

    name: ClassVar[str]
    config_metadata: ClassVar[Any] = None
    """The plugin's :class:`~clusterrpc.metadata.PluginMetadata`; ``None``: no configuration."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config: dict[str, Any] = dict(config)

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Apply a new configuration (validated, defaults filled in) while serving: SIGHUP
        or ``plugins.configure``. The default replaces :attr:`config`. Override it to act on
        a change, or raise :class:`~clusterrpc.errors.ConfigurationError` to refuse one that
        needs a restart (the old configuration then stays)."""
        self.config = dict(config)


class ServicePluginRegistry(PluginRegistry[ServicePlugin]):
    """An immutable set of service plugin classes, by name (they have no wire id).

    Lookups raise :class:`~clusterrpc.errors.ConfigurationError` for names that are not
    registered.
    """

    kind = "service plugin"
    plugin_type = "service"
    group = ENTRY_POINT_GROUP
    base = ServicePlugin
    id_attribute = None
    unknown_error = ConfigurationError

    __slots__ = ()

    @classmethod
    def from_entry_points(cls) -> ServicePluginRegistry:
        """Discover every service plugin installed under ``clusterrpc.services`` (see
        :mod:`clusterrpc.plugins` for conflicts and broken plugins)."""
        classes, origins, broken = cls.discover()
        return cls(classes, origins=origins, broken=broken, versions=cls.versions_of())

    def create(self, name: str, section: Mapping[str, Any], *,
               path: str = "") -> ServicePlugin:
        """Validate ``section`` against plugin ``name``'s metadata, fill in its defaults and
        create the plugin. Raises :class:`~clusterrpc.errors.ConfigProblemsError` listing
        every problem (``path`` prefixes their field paths, e.g. ``plugins.NAME``), or what
        :meth:`by_name` raises."""
        return self.by_name(name)(self.configuration(name, section, path=path))

    def configuration(self, name: str, section: Mapping[str, Any], *,
                      path: str = "") -> dict[str, Any]:
        """``section`` checked against plugin ``name``'s metadata, with defaults filled in;
        raises as :meth:`create` does."""
        from clusterrpc.metadata import check  # noqa: PLC0415

        return check(self.metadata(name), section, where=path or f"plugins.{name}")


@functools.cache
def default_services() -> ServicePluginRegistry:
    """The service plugins installed in this environment (built once, then cached)."""
    return ServicePluginRegistry.from_entry_points()
