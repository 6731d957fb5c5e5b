"""The daemon's log formats: human lines, JSON lines with node/cluster/term/view, redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from clusterrpc.cli.logs import MASK, SecretRedactor, configure_logging

SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA=="


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines_carry_node_cluster_term_and_view(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    state = {"node": "n1", "cluster": "ORG/UK/EDIN", "term": 3, "view": 12}
    configure_logging(log_format="json", context=lambda: state, stream=stream)
    logging.getLogger("clusterrpc.test").info("leader is %s", "n2")
    state["term"] = 4
    logging.getLogger("clusterrpc.test").warning("second\nline")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "leader is n2"
    assert first["level"] == "info"
    assert first["logger"] == "clusterrpc.test"
    assert (first["node"], first["cluster"], first["term"], first["view"]) == (
        "n1", "ORG/UK/EDIN", 3, 12)
    assert first["time"].endswith("+00:00")
    # The context is read per record, and a message's newline stays inside one JSON line.
    assert second["term"] == 4
    assert second["message"] == "second\nline"


def test_json_fields_are_null_before_the_components_run(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    logging.getLogger("x").error("no context")
    line = json.loads(stream.getvalue())
    assert {key: line[key] for key in ("node", "cluster", "term", "view")} == dict.fromkeys(
        ("node", "cluster", "term", "view"))


def test_json_exception_is_one_field(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert "RuntimeError: boom" in document["exception"]


def test_text_format_is_one_human_line(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("clusterrpc.serve").info("node %s started", "n1")
    assert stream.getvalue().rstrip().endswith("INFO clusterrpc.serve: node n1 started")


def test_level_filters(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(level="warning", stream=stream)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_are_masked_in_message_arguments_and_tracebacks(
        root_logger: logging.Logger, log_format: str) -> None:
    stream = io.StringIO()
    configure_logging(log_format=log_format, stream=stream,
                      redactor=SecretRedactor([SECRET]))
    logging.getLogger("x").info("loaded key %s", SECRET)
    logging.getLogger("x").info(f"inline {SECRET} too")
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        logging.getLogger("x").exception("reload failed")
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count(MASK) == 3


def test_a_reconfigure_replaces_the_handler(root_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second, log_format="json")
    logging.getLogger("x").info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging(log_format="yaml")
    with pytest.raises(ValueError, match="at least"):
        SecretRedactor(["abc"])
