"""Logging for the long-running commands (``serve``, ``daemon``): human lines or JSON lines.

Both go to standard error through the standard library's :mod:`logging`:

* ``--log-format text`` (the default): ``2026-12-06 10:15:02,123 INFO clusterrpc.serve: node
  n1 of cluster ORG/UK/EDIN started`` — one line a record, for a terminal or journald.
* ``--log-format json``: one JSON object a line, for a log shipper::

      {"time": "2026-12-06T10:15:02.123456+00:00", "level": "info",
       "logger": "clusterrpc.serve", "message": "node n1 of cluster ORG/UK/EDIN started",
       "node": "n1", "cluster": "ORG/UK/EDIN", "term": 3, "view": 12}

  ``node`` and ``cluster`` are always present; ``term`` (the election's current term) and
  ``view`` (the membership view number) are present once those components run, else ``null``
  — so a reader can correlate a line with the leader and the membership of that moment without
  parsing messages. An exception adds ``"exception"`` (the formatted traceback). The keys are
  fixed: a record's own ``extra=`` fields are not merged in, so a caller cannot shadow them.

Secrets never reach a log line: every handler carries a :class:`SecretRedactor`, which replaces
each registered secret (keys' text forms, plugin fields marked secret) with ``********`` in the
formatted message, its arguments and any traceback. Secrets are registered by value, so a
secret that reaches a log through an error message from any layer is caught too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TextIO

__all__ = ["LOG_FORMATS", "MASK", "JsonFormatter", "SecretRedactor", "configure_logging"]

LOG_FORMATS: Final = ("text", "json")
MASK: Final = "********"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Secrets shorter than this are not redacted by substring: a 2-character "secret" would mask
# every occurrence of those letters in every line and hide what the log is for. Real keys are
# 32 bytes or more; a plugin's secret field shorter than this is refused as a redaction target
# (see SecretRedactor.add) rather than silently over-masking.
MIN_SECRET_LENGTH: Final = 6

Context = Callable[[], Mapping[str, object]]
"""Returns the fields every JSON line carries (node, cluster, term, view) at that moment."""


class SecretRedactor(logging.Filter):
    """A filter that masks registered secret strings in a record before it is formatted.

    The record's message is rendered (``msg % args``) once, masked, and stored back with no
    arguments, so no formatter can reach an unmasked argument; the exception text is rendered
    and masked the same way. Register secrets with :meth:`add` (for example when a keyring is
    loaded or reloaded); :meth:`add` raises :class:`ValueError` for a secret shorter than
    ``MIN_SECRET_LENGTH`` characters, which cannot be masked without masking ordinary text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Mask ``secret`` from now on (raises :class:`ValueError` if it is too short)."""
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"a secret to redact must be at least {MIN_SECRET_LENGTH} characters"
            )
        self._secrets.add(secret)

    def try_add(self, secret: str) -> bool:
        """:meth:`add` for a secret an operator chose (a plugin's field): ``False``, and
        nothing registered, for one too short to mask without masking ordinary text."""
        if len(secret) < MIN_SECRET_LENGTH:
            return False
        self.add(secret)
        return True

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``********``."""
        # Longest first: a secret that contains another must be masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        # The traceback is now in exc_text (masked); formatters must not render it again.
        record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module docstring)."""

    def __init__(self, *, context: Context) -> None:
        super().__init__()
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "node": None, "cluster": None, "term": None, "view": None,
        }  # fmt: skip
        try:
            fields = self._context()
        except Exception as error:  # a broken context must not lose the log line itself
            fields = {"context_error": f"{type(error).__name__}: {error}"}
        for key, value in fields.items():
            if key not in ("time", "level", "logger", "message"):
                document[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        # ensure_ascii: a line stays one line and valid UTF-8 whatever a message holds.
        return json.dumps(document, default=str, ensure_ascii=True)


def configure_logging(
    *,
    level: str = "info",
    log_format: str = "text",
    context: Context | None = None,
    redactor: SecretRedactor | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (standard error).

    ``log_format`` is ``"text"`` or ``"json"`` (raises :class:`ValueError` otherwise);
    ``context`` supplies the JSON lines' node/cluster/term/view fields; ``redactor`` masks
    secrets in every record this handler emits. Replaces any handler an earlier call installed
    (so a test or a reload can call it twice) and returns the new handler. Only a process that
    runs a node calls this: importing clusterrpc never configures logging.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, "
                         f"not {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(context=context or dict))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if redactor is not None:
        handler.addFilter(redactor)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_clusterrpc_handler", False)]:
        root.removeHandler(old)
        old.close()
    handler._clusterrpc_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
