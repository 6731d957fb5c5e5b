"""The daemon's running service plugins, and the ``plugins.*`` methods that show and change
their configuration — what ``clusterrpc plugins`` and the web console call.

A configuration submitted over RPC is validated against the plugin's metadata exactly as
``node.toml`` is; it is applied to the running plugin (:meth:`ServicePlugin.reconfigure`) but
not written back to ``node.toml``: the file stays the operator's, and a restart goes back to
it. Secrets are write-only: :meth:`PluginHost.configuration` never returns one (only the names
of the secret fields that are set), and a submitted configuration that leaves a secret field
out keeps the current value — so a form never needs to hold a secret to change something else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from clusterrpc import Fault, remote
from clusterrpc.errors import ConfigProblemsError, ConfigurationError, FaultCode
from clusterrpc.services import ServicePlugin, ServicePluginRegistry

__all__ = ["PluginHost", "problem_rows"]

log = logging.getLogger("clusterrpc.plugins")


def problem_rows(error: ConfigProblemsError) -> list[dict[str, str]]:
    """The problems of ``error`` as XML-RPC structs (secret values are already masked)."""
    return [{"path": problem.path, "expected": problem.expected, "value": problem.value,
             "message": problem.message} for problem in error.problems]


class PluginHost:
    """The service plugins one daemon runs, by name, and their configurations (module
    docstring). Published as ``plugins``."""

    def __init__(self, registry: ServicePluginRegistry, *,
                 on_secret: Callable[[str], object] | None = None) -> None:
        self.registry = registry
        self.running: dict[str, ServicePlugin] = {}
        self.on_secret = on_secret
        """Called with each secret value a configuration brings, before it is applied (the
        daemon registers them with its log redactor)."""

    def start(self, name: str, config: Mapping[str, Any]) -> ServicePlugin:
        """Create plugin ``name`` with ``config`` (already checked: see
        :meth:`ServicePluginRegistry.configuration`) and keep it. The caller serves it."""
        plugin = self.registry.by_name(name)(config)
        self.running[name] = plugin
        return plugin

    def _secret_names(self, name: str) -> set[str]:
        return {field.fieldname for field in self.registry.metadata(name).fields
                if field.secret}

    def _merged(self, name: str, submitted: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(submitted)
        current = self.running[name].config
        for secret in self._secret_names(name):
            if secret not in merged and current.get(secret) is not None:
                merged[secret] = current[secret]  # left out: keep it (module docstring)
        return merged

    def apply(self, name: str, submitted: Mapping[str, Any], *, path: str = "") -> bool:
        """Validate ``submitted`` for the running plugin ``name`` and reconfigure it when it
        differs from the current configuration; ``True`` if it changed. Raises
        :class:`~clusterrpc.errors.ConfigProblemsError` with every problem, or
        :class:`~clusterrpc.errors.ConfigurationError` when the plugin refuses the change or
        does not run (nothing changes then)."""
        if name not in self.running:
            raise ConfigurationError(f"plugin {name!r} does not run on this node (add a "
                                     f"[plugins.{name}] table to node.toml and restart)")
        config = self.registry.configuration(name, self._merged(name, submitted),
                                             path=path or f"plugins.{name}")
        plugin = self.running[name]
        self._report_secrets(name, config)
        if config == plugin.config:
            return False
        plugin.reconfigure(config)
        log.info("plugin %s reconfigured: %s", name, ", ".join(
            sorted(key for key in {*config, *plugin.config}
                   if config.get(key) != plugin.config.get(key))) or "no field")
        return True

    def reload(self, sections: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """SIGHUP's work: apply ``node.toml``'s ``[plugins.*]`` tables again. Every table is
        checked first and nothing changes unless all are valid (raises
        :class:`~clusterrpc.errors.ConfigProblemsError` with every problem). A plugin added
        or removed since the start needs a restart: it is logged and left alone. Returns the
        names of the plugins that changed; raises :class:`~clusterrpc.errors.ConfigurationError`
        if one refuses its change (those before it keep theirs)."""
        problems = []
        checked: dict[str, dict[str, Any]] = {}
        for name, section in sections.items():
            if name not in self.running:
                continue
            try:
                checked[name] = self.registry.configuration(name, section,
                                                            path=f"plugins.{name}")
            except ConfigProblemsError as error:
                problems.extend(error.problems)
        if problems:
            raise ConfigProblemsError(problems)
        for name in sorted(set(sections) ^ set(self.running)):
            log.warning("plugin %s was %s node.toml: that takes a restart", name,
                        "added to" if name in sections else "removed from")
        changed = []
        for name, config in checked.items():
            if config != self.running[name].config:
                self.running[name].reconfigure(config)
                changed.append(name)
        return changed

    def _report_secrets(self, name: str, config: Mapping[str, Any]) -> None:
        if self.on_secret is None:
            return
        for secret in self._secret_names(name):
            value = config.get(secret)
            if isinstance(value, str):
                self.on_secret(value)

    # -- over RPC ------------------------------------------------------------------------------

    @remote
    def list(self) -> list[dict[str, Any]]:
        """The service plugins this node runs: name, version, short_text."""
        return [{"name": name, "version": self.registry.metadata(name).version,
                 "short_text": self.registry.metadata(name).short_text}
                for name in sorted(self.running)]

    @remote
    def configuration(self, name: str) -> dict[str, Any]:
        """The running configuration of plugin ``name``: ``values`` (every field but the
        secrets, absent values left out) and ``secrets_set`` (the secret fields that have a
        value). Fault -32602 for a plugin that does not run here."""
        plugin = self._running(name)
        secrets = self._secret_names(name)
        return {
            "values": {key: value for key, value in plugin.config.items()
                       if key not in secrets and value is not None},
            "secrets_set": sorted(key for key in secrets
                                  if plugin.config.get(key) is not None),
        }

    @remote
    def configure(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Validate ``config`` for plugin ``name`` and apply it (module docstring). Answers
        ``{"applied": bool, "changed": bool, "problems": [{path, expected, value, message}]}``:
        every problem with its field path, or ``applied`` true. A plugin's own refusal is
        one problem at the plugin's path. Fault -32602 for a plugin that does not run here."""
        self._running(name)
        try:
            changed = self.apply(name, config)
        except ConfigProblemsError as error:
            return {"applied": False, "changed": False, "problems": problem_rows(error)}
        except ConfigurationError as error:
            return {"applied": False, "changed": False, "problems": [
                {"path": f"plugins.{name}", "expected": "a configuration the plugin accepts",
                 "value": "", "message": str(error)}]}
        return {"applied": True, "changed": changed, "problems": []}

    def _running(self, name: str) -> ServicePlugin:
        try:
            return self.running[name]
        except KeyError:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"plugin {name!r} does not run on this node") from None
