"""Decorators, the service registry, dispatch, introspection, multicall and the call context."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
import sys
from typing import Any

import pytest

import clusterrpc
from clusterrpc import current_call, oneway, remote
from clusterrpc.codecs import CallMessage
from clusterrpc.errors import ConfigurationError, Fault, FaultCode
from clusterrpc.rpc import CallContext, ServiceRegistry
from clusterrpc.rpc.context import new_call_context
from clusterrpc.values import Value


class Election:
    """Leader election endpoint."""

    def __init__(self) -> None:
        self.votes: list[tuple[int, str]] = []

    @remote
    async def status(self) -> dict[str, Any]:
        """Who leads, in which term."""
        await asyncio.sleep(0)
        return {"leader": "n1", "term": 3}

    @oneway
    def vote(self, term: int, candidate: str) -> None:
        """Record a vote."""
        self.votes.append((term, candidate))

    @remote(name="whoami")
    def caller(self) -> str:
        call = current_call()
        return f"{call.node}/{call.key_id}/{call.transport}/{call.method}"

    @remote
    def scale(self, factor: float, values: list[int], note: str | None = None) -> list[float]:
        return [factor * value for value in values]

    @remote
    def when(self, moment: dt.datetime, blob: bytes, flag: bool) -> dt.datetime:
        return moment

    @remote
    def untyped(self, anything, *rest):  # type: ignore[no-untyped-def]
        return [anything, *rest]

    @remote
    def boom(self) -> None:
        raise KeyError("no such term")

    @remote
    def refuse(self) -> None:
        raise Fault(4711, "not the leader")

    def helper(self) -> str:  # not decorated: never published
        return "secret"

    _status_alias = status  # a private alias of a published method: never published


CONTEXT = CallContext(method="?", node="n2", key_id="k1", transport="tcp", peer="127.0.0.1:7400")


def run(registry: ServiceRegistry, method: str, *params: Value) -> Value:
    return asyncio.run(registry.invoke(CallMessage(method, params), CONTEXT))


@pytest.fixture
def registry() -> ServiceRegistry:
    registry = ServiceRegistry()
    registry.serve(Election(), name="election")
    return registry


def test_serve_publishes_decorated_public_methods_only(registry: ServiceRegistry) -> None:
    assert [n for n in registry.names() if n.startswith("election.")] == [
        "election.boom", "election.refuse", "election.scale", "election.status",
        "election.untyped", "election.vote", "election.when", "election.whoami",
    ]
    for hidden in ("election._status_alias", "election.helper"):
        with pytest.raises(Fault) as caught:
            run(registry, hidden)
        assert caught.value.code == FaultCode.METHOD_NOT_FOUND


def test_sync_async_and_oneway_methods_run(registry: ServiceRegistry) -> None:
    assert run(registry, "election.status") == {"leader": "n1", "term": 3}
    assert run(registry, "election.scale", 2, [1, 2]) == [2, 4]
    election = Election()
    other = ServiceRegistry()
    other.serve(election, name="e")
    assert run(other, "e.vote", 3, "n1") is None
    assert election.votes == [(3, "n1")]
    assert other.lookup("e.vote").oneway
    assert other.lookup("e.status").is_async


def test_current_call_inside_and_outside(registry: ServiceRegistry) -> None:
    assert run(registry, "election.whoami") == "n2/k1/tcp/?"
    with pytest.raises(RuntimeError, match="outside a method"):
        current_call()


def test_new_call_context_builds_what_the_dataclass_builds() -> None:
    # Every value distinct, each field named: a setter bound to the wrong field shows.
    built = new_call_context(method="s.m", node="n2", key_id="k1", transport="udp",
                             peer="127.0.0.1:7400", deadline=12.5, oneway=True, multicast=False)
    expected = CallContext(method="s.m", node="n2", key_id="k1", transport="udp",
                           peer="127.0.0.1:7400", deadline=12.5, oneway=True, multicast=False)
    assert type(built) is CallContext
    assert built == expected
    assert hash(built) == hash(expected)
    assert {field.name: getattr(built, field.name) for field in dataclasses.fields(CallContext)
            } == dataclasses.asdict(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.node = "n3"  # type: ignore[misc]


def test_concurrent_async_calls_see_their_own_context() -> None:
    class Slow:
        @remote
        async def who(self) -> str:
            await asyncio.sleep(0.01)
            return current_call().node or ""

    registry = ServiceRegistry()
    registry.serve(Slow(), name="s")

    async def main() -> list[Value]:
        calls = [
            registry.invoke(CallMessage("s.who", ()), CallContext(method="s.who", node=f"n{i}"))
            for i in range(50)
        ]
        return list(await asyncio.gather(*calls))

    assert asyncio.run(main()) == [f"n{i}" for i in range(50)]


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("election.vote", (3,), "missing a required argument: 'candidate'"),
        ("election.vote", (3, "n1", "extra"), "too many positional arguments"),
        ("election.vote", ("three", "n1"), "argument 'term' must be an int, not str"),
        ("election.vote", (True, "n1"), "argument 'term' must be an int, not bool"),
        ("election.scale", ("2", [1]), "argument 'factor' must be a number, not str"),
        ("election.scale", (2, {"a": 1}), "argument 'values' must be an array, not dict"),
        ("election.scale", (2, [1], 5), "argument 'note' must be a string or nil, not int"),
        ("election.when", ("2024", b"", True), "'moment' must be a datetime, not str"),
        ("election.when", (dt.datetime(2024, 1, 1), "x", True), "'blob' must be bytes, not str"),
    ],
)
def test_wrong_arity_or_types_are_invalid_params(
    registry: ServiceRegistry, method: str, params: tuple[Value, ...], message: str
) -> None:
    with pytest.raises(Fault) as caught:
        run(registry, method, *params)
    assert caught.value.code == FaultCode.INVALID_PARAMS
    assert message in caught.value.message


def test_lenient_where_hints_allow(registry: ServiceRegistry) -> None:
    # a tuple for a list, an int for a float
    assert run(registry, "election.scale", 2, (1, 2), None) == [2, 4]
    assert run(registry, "election.untyped", {"x": 1}, 2, 3) == [{"x": 1}, 2, 3]


def test_unknown_method_is_method_not_found(registry: ServiceRegistry) -> None:
    with pytest.raises(Fault) as caught:
        run(registry, "election.nope")
    assert caught.value.code == FaultCode.METHOD_NOT_FOUND
    assert "'election.nope' is not published" in caught.value.message


def test_exceptions_become_application_errors_without_traceback(registry: ServiceRegistry) -> None:
    with pytest.raises(Fault) as caught:
        run(registry, "election.boom")
    assert caught.value.code == FaultCode.APPLICATION_ERROR
    assert caught.value.message == "KeyError: 'no such term'"
    assert "Traceback" not in caught.value.message


def test_debug_adds_tracebacks() -> None:
    registry = ServiceRegistry(debug=True)
    registry.serve(Election(), name="election")
    with pytest.raises(Fault) as caught:
        run(registry, "election.boom")
    assert "Traceback" in caught.value.message
    assert 'raise KeyError("no such term")' in caught.value.message


def test_faults_pass_through(registry: ServiceRegistry) -> None:
    with pytest.raises(Fault) as caught:
        run(registry, "election.refuse")
    assert (caught.value.code, caught.value.message) == (4711, "not the leader")


# -- introspection -----------------------------------------------------------------------------


def test_list_methods_and_help(registry: ServiceRegistry) -> None:
    names = run(registry, "system.listMethods")
    assert isinstance(names, list)
    assert "system.multicall" in names
    assert "election.status" in names
    assert run(registry, "system.methodHelp", "election.status") == "Who leads, in which term."
    assert run(registry, "system.methodHelp", "election.whoami") == ""


def test_method_signatures_from_type_hints(registry: ServiceRegistry) -> None:
    assert run(registry, "system.methodSignature", "election.vote") == [
        ["nil", "int", "string"]
    ]
    assert run(registry, "system.methodSignature", "election.scale") == [
        ["array", "double", "array", "string"]
    ]
    assert run(registry, "system.methodSignature", "election.when") == [
        ["dateTime.iso8601", "dateTime.iso8601", "base64", "boolean"]
    ]
    assert run(registry, "system.methodSignature", "election.untyped") == "undef"
    assert run(registry, "system.methodSignature", "system.methodHelp") == [
        ["string", "string"]
    ]


def test_capabilities(registry: ServiceRegistry) -> None:
    capabilities = run(registry, "system.getCapabilities")
    assert isinstance(capabilities, dict)
    assert {"xmlrpc", "introspect", "system.multicall", "faults_interop", "nil",
            "clusterrpc.oneway"} <= set(capabilities)


def test_multicall(registry: ServiceRegistry) -> None:
    results = run(registry, "system.multicall", [
        {"methodName": "election.status", "params": []},
        {"methodName": "election.scale", "params": [3, [1]]},
        {"methodName": "election.nope", "params": []},
        {"methodName": "election.refuse", "params": []},
        {"methodName": "election.vote", "params": [1, "n1"]},
        {"methodName": "system.multicall", "params": [[]]},
        {"methodName": "election.whoami", "params": []},
        "not a struct",
    ])
    assert results == [
        [{"leader": "n1", "term": 3}],
        [[3]],
        {"faultCode": -32601, "faultString": "method 'election.nope' is not published"},
        {"faultCode": 4711, "faultString": "not the leader"},
        {"faultCode": -32600,
         "faultString": "election.vote is one-way: it has no result to put in a multicall reply"},
        {"faultCode": -32600, "faultString": "system.multicall cannot be nested"},
        ["n2/k1/tcp/election.whoami"],
        {"faultCode": -32602,
         "faultString": "system.multicall: call 7 must be a struct of methodName and params"},
    ]


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "system", "_x", "a..b", "a.", "a-b", ".a", 3])
def test_bad_service_names(name: Any) -> None:
    with pytest.raises(ConfigurationError):
        ServiceRegistry().serve(Election(), name=name)


def test_serving_twice_and_nothing_to_serve() -> None:
    registry = ServiceRegistry()
    registry.serve(Election(), name="election")
    with pytest.raises(ConfigurationError, match="already served"):
        registry.serve(Election(), name="election")
    with pytest.raises(ConfigurationError, match="no @remote or @oneway method"):
        registry.serve(object(), name="empty")
    registry.unserve("election")
    assert registry.names() == sorted(n for n in registry.names() if n.startswith("system."))


def test_decorator_misuse() -> None:
    with pytest.raises(ConfigurationError, match="cannot be published"):
        remote(name="bad name")(lambda: None)
    with pytest.raises(ConfigurationError, match="cannot be published"):

        @oneway
        def _hidden() -> None: ...

    with pytest.raises(ConfigurationError, match="is private"):

        @remote(name="public")
        def _implementation() -> None: ...

    with pytest.raises(ConfigurationError, match="plain methods"):
        remote(staticmethod(lambda: None))


def test_public_names_are_exported() -> None:
    for name in ("remote", "oneway", "current_call"):
        assert name in clusterrpc.__all__
        assert getattr(clusterrpc, name) is not None


def test_rpc_layer_does_no_io() -> None:
    # The connection protocol and the node configuration are sans-I/O too.
    code = (
        "import sys, clusterrpc.rpc, clusterrpc.rpc.service, clusterrpc.rpc.protocol\n"
        "import clusterrpc.config\n"
        "print(sorted({'socket', 'asyncio', 'threading', 'selectors'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
