"""``clusterrpc plugins`` and ``clusterrpc config``: the installed plugins, their configuration
metadata, and a check of a ``node.toml`` that reports every problem.

* ``plugins list [--type T] [--json]`` — every installed plugin of every type (codec, auth,
  service): type, name, version, what it is; plugins that failed to load, with why.
* ``plugins describe NAME [--type T] [--format fields|json-schema|ocf]`` — the plugin's
  configuration metadata (``spec/metadata.md``): the field list (default; ``--json`` for the
  field list as JSON), JSON Schema 2020-12, or OCF 1.1 resource-agent XML for Pacemaker tools.
  Secrets never have a default shown.
* ``config check FILE [--json]`` — everything ``daemon`` checks before it listens: the file,
  the keyring, the services, and each ``[plugins.NAME]`` table against its plugin's metadata.
  Exit 0 if it would start; exit 2 with every problem — field path, what was expected, the
  offending value (``********`` for a secret) — one per line, or as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeVar

from clusterrpc.cli.exits import EXIT_OK, EXIT_USAGE, UsageError
from clusterrpc.errors import ConfigProblemsError, ConfigurationError

__all__ = ["register"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

FORMATS = ("fields", "json-schema", "ocf")


def _cmd_list(args: argparse.Namespace) -> int:
    from clusterrpc.plugins import list_plugins, plugin_types  # noqa: PLC0415

    if args.type is not None and args.type not in plugin_types():
        raise UsageError(f"unknown plugin type {args.type!r} "
                         f"(types: {', '.join(sorted(plugin_types()))})")
    rows = [row for row in list_plugins() if args.type in (None, row["type"])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max((len(row["name"]) for row in rows), default=4)
    print(f"{'TYPE':<8} {'NAME':<{width}} {'VERSION':<9} DESCRIPTION")
    for row in rows:
        what = row["short_text"] if not row["error"] else f"BROKEN: {row['error']}"
        print(f"{row['type']:<8} {row['name']:<{width}} {row['version'] or '-':<9} {what}")
    return EXIT_OK


def _field_lines(fields: list[dict[str, Any]], indent: str = "") -> list[str]:
    lines: list[str] = []
    for field in fields:
        kind = field["basictype"]
        if field.get("specialtype"):
            kind += f" ({field['specialtype']})"
        flags = [flag for flag in ("required", "secret") if field.get(flag)]
        limits = [f"{key} {field[key]}" for key in ("length", "minimum", "maximum")
                  if key in field]
        if "regex" in field:
            limits.append(f"regex {field['regex']}")
        if "default" in field:
            limits.append(f"default {json.dumps(field['default'])}")
        head = f"{indent}{field['fieldname']}: {kind}"
        if flags:
            head += f" [{', '.join(flags)}]"
        lines.append(head + (f" — {field['label']}" if field.get("label") else ""))
        if field.get("short_text"):
            lines.append(f"{indent}    {field['short_text']}")
        if limits:
            lines.append(f"{indent}    {'; '.join(limits)}")
        if "items" in field:
            lines.append(f"{indent}    each item:")
            lines += _field_lines([field["items"]], indent + "      ")
        if "fields" in field:
            lines += _field_lines(field["fields"], indent + "    ")
    return lines


def _cmd_describe(args: argparse.Namespace) -> int:
    from clusterrpc.metadata import to_fields, to_json_schema, to_ocf_xml  # noqa: PLC0415
    from clusterrpc.plugins import find_plugin  # noqa: PLC0415

    try:
        kind, meta = find_plugin(args.name, args.type or "")
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    if args.format == "json-schema":
        print(json.dumps(to_json_schema(meta), indent=2))
    elif args.format == "ocf":
        sys.stdout.write(to_ocf_xml(meta))
    elif args.json:
        print(json.dumps({"type": kind, "name": meta.name, "version": meta.version,
                          "short_text": meta.short_text, "long_text": meta.long_text,
                          "fields": to_fields(meta)}, indent=2))
    else:
        print(f"{kind} {meta.name} {meta.version}: {meta.short_text}")
        if meta.long_text:
            print(meta.long_text)
        fields = to_fields(meta)
        print()
        print("\n".join(_field_lines(fields)) if fields else "(takes no configuration)")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from clusterrpc.cli.serve import check_config  # noqa: PLC0415

    try:
        summary = check_config(args.file)
    except ConfigProblemsError as error:
        if args.json:
            print(json.dumps({"ok": False, "file": str(args.file), "problems": [
                {"path": p.path, "expected": p.expected, "value": p.value,
                 "message": p.message} for p in error.problems]}, indent=2))
        else:
            print(f"clusterrpc: {args.file}: {len(error.problems)} problem(s):",
                  file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem.path}: {problem.message} (expected {problem.expected}, "
                      f"got {problem.value})", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ConfigurationError) as error:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "file": str(args.file), "problems": [
            {"path": "", "expected": "", "value": "", "message": str(error)}]}, indent=2))
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"ok": True, "file": str(args.file), **summary}, indent=2))
    else:
        print(f"{args.file}: ok (node {summary['node']}, cluster {summary['cluster']}, "
              f"{len(summary['services'])} service(s), {len(summary['plugins'])} plugin(s))")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``plugins`` and ``config`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    plugins = commands.add_parser("plugins", help="the installed plugins and their metadata")
    sub = plugins.add_subparsers(dest="plugins_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="every installed plugin (codec, auth, service)")
    listing.add_argument("--type", help="only plugins of this type")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(handler=_cmd_list)
    describe = sub.add_parser("describe", help="a plugin's configuration metadata")
    describe.add_argument("name", metavar="NAME")
    describe.add_argument("--type", help="the plugin's type, when two types share NAME")
    describe.add_argument("--format", choices=FORMATS, default="fields",
                          help="fields (default), json-schema (2020-12) or ocf (1.1 XML)")
    describe.add_argument("--json", action="store_true",
                          help="the field list as JSON (with --format fields)")
    describe.set_defaults(handler=_cmd_describe)

    config = commands.add_parser("config", help="check a node's configuration file")
    config_sub = config.add_subparsers(dest="config_command", required=True,
                                       metavar="COMMAND")
    check = config_sub.add_parser(
        "check", help="check node.toml as the daemon would, reporting every problem")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--json", action="store_true", help="one JSON document")
    check.set_defaults(handler=_cmd_check)
