"""The web console: one page that shows a node and configures its plugins, built only from
metadata and RPC.

A daemon with ``http_console = true`` serves it at ``/console`` on each ``http(s)://``
listener, behind the same HTTP Basic credentials as its XML-RPC (user: a key id, password: its
token, ``clusterrpc keys http-credentials``). The page has no framework and no server-side
rendering: its script calls the node's XML-RPC methods — ``node.status`` (node, cluster,
uptime, leader and term, local clients, counters), ``membership.members`` (the member table),
``plugins.list``, ``system.describePlugin`` and ``plugins.configuration`` — and renders one
configuration form per running service plugin **from that plugin's metadata alone**, so a
new plugin gets a form with no new UI code (the framework paper's goal). A submitted form goes
to ``plugins.configure``; each problem is shown at its field, by field path. Secret fields are
password inputs that start empty and say whether a value is set; left empty, the value is kept.

The page, its script and its style sheet are package data; :func:`console_pages` returns them
as pages (:class:`~clusterrpc.transports.http.Page`) for
:class:`~clusterrpc.transports.http.HttpServer`.
"""

from __future__ import annotations

import html
from importlib import resources

from clusterrpc.transports.http import Page

__all__ = ["CONSOLE_PATH", "console_pages"]

CONSOLE_PATH = "/console"


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def console_pages(*, rpc_path: str = "/RPC2") -> dict[str, Page]:
    """The console's resources by request path, for an endpoint whose XML-RPC path is
    ``rpc_path`` (the page posts its calls there)."""
    page = _read("console.html").replace(
        b"{{RPC_PATH}}", html.escape(rpc_path, quote=True).encode("utf-8"))
    return {
        CONSOLE_PATH: Page(b"text/html; charset=utf-8", page),
        f"{CONSOLE_PATH}/console.js": Page(b"text/javascript; charset=utf-8",
                                           _read("console.js")),
        f"{CONSOLE_PATH}/console.css": Page(b"text/css; charset=utf-8", _read("console.css")),
    }
