"""Testing tools: an in-memory datagram network with fault injection.

A :class:`MemoryNetwork` stands in for the operating system's UDP stack. Nodes (and any
:class:`~clusterrpc.transports.datagrams.DatagramEndpoint`) attach to it with
``Node(..., network=net)``; their ``udp://`` sockets, multicast group memberships and group
senders then exchange datagrams in memory, through hooks that drop, duplicate, delay, reorder,
corrupt or partition them, deterministically from a seed::

    net = MemoryNetwork(seed=1)
    net.duplicate(1.0)                                 # every datagram arrives twice
    net.drop(0.2, dst="n3")                            # n3 loses a fifth of what is sent to it
    n1 = Node("n1", cluster="C", keyring=keyring, listen=["udp://10.0.0.1:7400"], network=net)

**Addresses.** Any IP addresses will do: they need not exist on the machine, and nothing is
sent on a real network. Write them as literals (host names would still be resolved by the
operating system). The model, close to one LAN of hosts:

* a socket bound to ``udp://H:P`` receives what is sent to ``(H, P)``; binding an address that
  is taken raises :class:`~clusterrpc.errors.TransportError`; port 0 gets a free port from
  49152 up (unique on the whole network);
* a socket bound to ``0.0.0.0`` or ``::`` (a node's client socket, a fan-out group's sender)
  receives what is sent to its port at any host address that no other socket binds exactly.
  Its datagrams carry as source address the host of the same node's first bound socket (its
  "interface"), else the wildcard address itself; answers find their way back either way;
* a multicast group member (``udp://G:P?iface=I``) receives every datagram sent to ``(G, P)``,
  as do all the other members (several may bind one group address); TTL and interface play no
  part in delivery, but the interface is the member's host: its answers come from ``(I, P)``,
  and selectors name it by ``I``. A multicast group's sender binds ``(I, port)`` with the
  group's interface, as its real socket does. The sender's own node receives its group's
  datagrams too (multicast loopback is on for real sockets as well).

Only what attaches through ``network=`` uses it: the blocking clients (``connect()``,
``connect_group()``) and ``tcp://``, ``unix://`` and ``http://`` addresses always use real
sockets (a node on a memory network may only listen on ``udp://``).

**Delivery.** ``transport.sendto`` never delivers synchronously: each datagram is queued and
handed to ``datagram_received`` from the running event loop, after its delay (none unless a
rule adds one), in order of due time, then of sending. Datagrams sent to nobody (and those whose
socket closed before they arrived) are counted in ``undeliverable`` and dropped. One event loop
at a time.

**Faults.** :meth:`~MemoryNetwork.drop`, :meth:`~MemoryNetwork.duplicate`,
:meth:`~MemoryNetwork.delay`, :meth:`~MemoryNetwork.reorder`, :meth:`~MemoryNetwork.corrupt`
and :meth:`~MemoryNetwork.rule` (a function of your own) each add a :class:`Rule` that applies
to every datagram, or only to those whose sender matches ``src`` and receiver matches ``dst``
(a node name, a host address, ``"host:port"``, a group address, or a collection of these)
and for which ``when(datagram)`` is true. A multicast datagram is one :class:`Datagram` per
receiving member, so each member's link has its own fate. Rules apply in the order they were
added; :meth:`Rule.remove` takes one away, :meth:`~MemoryNetwork.clear` all.
:meth:`~MemoryNetwork.partition` cuts two sets of sockets apart in both directions until
:meth:`~MemoryNetwork.heal`.

**Determinism.** Every random choice (drop or not, how many copies, which bits flip, the delay
drawn from a range) comes from a random generator per link, seeded by the network's ``seed``
and the link's two ends (node names and addresses). So the same sends over a link meet the
same fate whatever happens on other links, and a test that sends the same datagrams in the same
order sees the same outcome in every run: the same counters and, with ``trace=True``, the same
:attr:`~MemoryNetwork.events`. Datagrams without delay arrive in the order they were sent
(reordering by :meth:`~MemoryNetwork.reorder` is by position, not by time); delayed ones in
order of due time, which is exact for equal delays, while datagrams drawn different delays
from a range keep their order between runs only when their due times differ by more than the
event loop's timing jitter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import heapq
import ipaddress
import itertools
import math
import random
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from clusterrpc.errors import ConfigurationError, TransportError
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.datagrams import MAX_DATAGRAM, DatagramEndpoint
from clusterrpc.transports.multicast import GroupSender

__all__ = ["Datagram", "MemoryNetwork", "MemoryTransport", "Rule", "Selector"]

Selector = str | Collection[str] | None
"""Which sockets a rule applies to: a node name, a host address, ``"host:port"`` (IPv6 as
``"[::1]:7400"``), a multicast group address (its members), a collection of these, or ``None``
for any."""

FIRST_PORT = 49152
"""Where free ports (binding port 0) start."""

_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - in memory: any address
_EPSILON = time.get_clock_info("monotonic").resolution


def _norm_host(host: str) -> str:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return host.lower()


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _norm_selector(text: str) -> str:
    """A selector string in the form :func:`_labels` produces."""
    if text.startswith("[") and "]:" in text:
        host, _, port = text[1:].partition("]:")
        return _host_port(_norm_host(host), int(port)) if port.isdigit() else text
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return _host_port(_norm_host(host), int(port)) if port.isdigit() else text
    return _norm_host(text)


def _selector_set(selector: Selector) -> frozenset[str] | None:
    if selector is None:
        return None
    if isinstance(selector, str):
        return frozenset({_norm_selector(selector)})
    return frozenset(_norm_selector(item) for item in selector)


@dataclasses.dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram on its way to one receiving socket, as rules see it.

    ``data``: the bytes. ``source``: the sender's address, as the receiver will see it.
    ``destination``: the address it was sent to (a group's, for multicast). ``sender`` and
    ``receiver``: the node names of the two sockets (``None`` for a socket without one), and
    ``receiver_address``: where the receiving socket is (a group member's: its interface and the
    group port; a wildcard socket's: its node's host). ``multicast``: sent to a group.
    ``number``: which send on this network it came from (1, 2, …: copies share it). ``delay``:
    seconds it waits before arriving, so far. ``hold``: when set, it waits at its socket (up to
    this many seconds) for the next datagram to overtake it (:meth:`MemoryNetwork.reorder`).
    ``random``: the link's random generator (use it in your own rules to stay deterministic).

    Rules return new datagrams with :func:`dataclasses.replace` (e.g. other ``data`` or a longer
    ``delay``).
    """

    data: bytes
    source: tuple[str, int]
    destination: tuple[str, int]
    sender: str | None
    receiver: str | None
    receiver_address: tuple[str, int]
    multicast: bool
    number: int
    delay: float = 0.0
    hold: float | None = None
    random: random.Random = dataclasses.field(default_factory=random.Random, compare=False,
                                              repr=False)


RuleAction = Callable[[Datagram], "Iterable[Datagram] | None"]


class Rule:
    """One fault rule of a :class:`MemoryNetwork` (made by its methods, e.g.
    :meth:`MemoryNetwork.drop`). ``kind``: what it does. ``hits``: datagrams it acted on (those
    it dropped, duplicated, delayed, corrupted, marked for reordering, or for which a custom
    rule returned something)."""

    __slots__ = ("_action", "_dst", "_network", "_src", "_when", "hits", "kind")

    def __init__(self, network: MemoryNetwork, kind: str, action: RuleAction, *,
                 src: Selector, dst: Selector, when: Callable[[Datagram], bool] | None) -> None:
        self._network = network
        self.kind = kind
        self._action = action
        self._src = _selector_set(src)
        self._dst = _selector_set(dst)
        self._when = when
        self.hits = 0

    def matches(self, datagram: Datagram, source: frozenset[str],
                receiver: frozenset[str]) -> bool:
        """Whether the rule applies (``source``/``receiver``: the two sockets' labels)."""
        if self._src is not None and self._src.isdisjoint(source):
            return False
        if self._dst is not None and self._dst.isdisjoint(receiver):
            return False
        return self._when is None or self._when(datagram)

    def apply(self, datagram: Datagram) -> list[Datagram] | None:
        """What becomes of ``datagram``: ``None`` (unchanged) or the datagrams to deliver
        instead (none: dropped)."""
        result = self._action(datagram)
        if result is None:
            return None
        self.hits += 1
        return list(result)

    def remove(self) -> None:
        """Stop applying this rule (no-op if already removed)."""
        self._network._remove(self)

    def __repr__(self) -> str:
        return f"<Rule {self.kind} hits={self.hits}>"


def _probability(value: float, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0):
        raise ConfigurationError(f"{what} must be a probability from 0 to 1, not {value!r}")
    return float(value)


def _seconds(value: object, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            or not math.isfinite(value)):
        raise ConfigurationError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


class _Socket:
    """One endpoint attached to the network."""

    __slots__ = ("closed", "endpoint", "group", "host", "messenger", "node", "port",
                 "transport", "wildcard")

    def __init__(self, endpoint: DatagramEndpoint, host: str, port: int,
                 group: tuple[str, int] | None) -> None:
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self.group = group
        self.wildcard = host in _WILDCARDS
        self.messenger = getattr(endpoint, "messenger", None)
        node = getattr(self.messenger, "node", None)
        self.node = node if isinstance(node, str) else None
        self.transport: MemoryTransport | None = None
        self.closed = False

    @property
    def sockname(self) -> tuple[Any, ...]:
        if self.group is not None:
            host, port = self.group
        else:
            host, port = self.host, self.port
        return (host, port, 0, 0) if ":" in host else (host, port)


class MemoryTransport(asyncio.DatagramTransport):
    """The transport a :class:`MemoryNetwork` gives an endpoint: ``sendto`` hands datagrams to
    the network; ``close`` detaches the endpoint (``connection_lost(None)`` follows from the
    event loop). ``get_extra_info``: ``"sockname"`` is the bound address, ``"peername"`` and
    ``"socket"`` are ``None``."""

    def __init__(self, network: MemoryNetwork, sock: _Socket) -> None:
        super().__init__({"sockname": sock.sockname, "peername": None, "socket": None})
        self._network = network
        self._sock = sock
        self._protocol: asyncio.BaseProtocol = sock.endpoint
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if addr is None or isinstance(addr, str) or len(addr) < 2:
            raise ValueError(f"a (host, port) destination is required, not {addr!r}")
        if self._closing:
            return  # as asyncio's own transports: sends after close are ignored
        self._network._send(self._sock, bytes(data), (str(addr[0]), int(addr[1])))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._network._unbind(self._sock)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._protocol.connection_lost(None)
        else:
            loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._sock.endpoint.url}>"


_Queued = tuple[float, int, _Socket, Datagram]


class MemoryNetwork:
    """An in-memory datagram network with fault injection (see the module docstring).

    ``seed``: seeds every random choice (the same seed and sends give the same outcome).
    ``trace``: record :attr:`events`.

    Counters (attributes, and :attr:`counters` as a dict): ``sent`` (``sendto`` calls),
    ``delivered`` (datagrams handed to a socket), ``dropped`` (by rules and partitions),
    ``duplicated`` (extra copies made), ``corrupted``, ``delayed`` and ``reordered``
    (datagrams a rule changed so), ``undeliverable`` (sent to an address nobody binds, or
    arriving after their socket closed).
    """

    def __init__(self, *, seed: int = 0, trace: bool = False) -> None:
        self.seed = seed
        self.trace = trace
        self.events: list[tuple[str, int, str, str]] = []
        """With ``trace=True``: ``(what, number, source, receiver)`` for every datagram's fate,
        in order: ``what`` is ``sent`` (``receiver``: the destination address),
        ``undeliverable``, ``dropped``, ``duplicated``, ``corrupted``, ``held`` (for
        reordering) or ``delivered``; ``source``/``receiver`` read ``node@host:port``."""
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.corrupted = 0
        self.delayed = 0
        self.reordered = 0
        self.undeliverable = 0
        self._rules: list[Rule] = []
        self._partitions: list[tuple[Rule, frozenset[str], frozenset[str]]] = []
        self._unicast: dict[tuple[str, int], _Socket] = {}
        self._groups: dict[tuple[str, int], list[_Socket]] = {}
        self._sockets: list[_Socket] = []
        self._next_port = FIRST_PORT
        self._links: dict[str, random.Random] = {}
        self._numbers = itertools.count(1)
        self._order = itertools.count()
        self._queue: list[_Queued] = []
        self._held: dict[_Socket, tuple[Datagram, asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_when = math.inf

    # -- counters ------------------------------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """Every counter by name (see the class docstring)."""
        return {name: getattr(self, name) for name in (
            "sent", "delivered", "dropped", "duplicated", "corrupted", "delayed", "reordered",
            "undeliverable")}  # fmt: skip

    def reset_counters(self) -> None:
        """Set every counter to 0 and forget the recorded :attr:`events`."""
        for name in self.counters:
            setattr(self, name, 0)
        self.events.clear()

    @property
    def in_flight(self) -> int:
        """Datagrams sent but not yet delivered (queued for their time, or held back)."""
        return len(self._queue) + len(self._held)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no datagram is in flight, including those sent meanwhile (answers …),
        then let the event loop run what they started. Raises ``TimeoutError`` after
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            quiet = 0
            while quiet < 3:
                if self.in_flight:
                    quiet = 0
                    loop = asyncio.get_running_loop()
                    due = [timer.when() for _, timer in self._held.values()]
                    due += [self._queue[0][0]] if self._queue else []
                    await asyncio.sleep(max(min(due) - loop.time(), 0.0))
                else:
                    quiet += 1
                    await asyncio.sleep(0)

    # -- faults --------------------------------------------------------------------------------

    def drop(self, probability: float | Callable[[Datagram], bool] = 1.0, *,
             src: Selector = None, dst: Selector = None,
             when: Callable[[Datagram], bool] | None = None) -> Rule:
        """Lose datagrams: each with ``probability``, or those for which ``probability`` (a
        function of the :class:`Datagram`) returns true."""
        if callable(probability):
            predicate = probability

            def drop_if(datagram: Datagram) -> list[Datagram] | None:
                return [] if predicate(datagram) else None

            return self._add("drop", drop_if, src, dst, when)
        chance = _probability(probability, "drop probability")

        def drop(datagram: Datagram) -> list[Datagram] | None:
            return [] if datagram.random.random() < chance else None

        return self._add("drop", drop, src, dst, when)

    def duplicate(self, probability: float = 1.0, *, copies: int = 1, src: Selector = None,
                  dst: Selector = None, when: Callable[[Datagram], bool] | None = None) -> Rule:
        """Deliver datagrams more than once: each, with ``probability``, arrives ``copies``
        extra times (rules added later apply to each copy on its own)."""
        chance = _probability(probability, "duplicate probability")
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ConfigurationError(f"copies must be a positive int, not {copies!r}")

        def duplicate(datagram: Datagram) -> list[Datagram] | None:
            return [datagram] * (copies + 1) if datagram.random.random() < chance else None

        return self._add("duplicate", duplicate, src, dst, when)

    def delay(self, seconds: float | tuple[float, float], *, src: Selector = None,
              dst: Selector = None, when: Callable[[Datagram], bool] | None = None) -> Rule:
        """Delay datagrams by ``seconds``, or by a time drawn uniformly from ``(low, high)``."""
        if isinstance(seconds, tuple):
            if len(seconds) != 2:
                raise ConfigurationError(f"a delay range is (low, high), not {seconds!r}")
            low, high = (_seconds(value, "delay") for value in seconds)
            if high < low:
                raise ConfigurationError(f"a delay range is (low, high), not {seconds!r}")
        else:
            low = high = _seconds(seconds, "delay")

        def delay(datagram: Datagram) -> list[Datagram]:
            extra = low if low == high else datagram.random.uniform(low, high)
            return [dataclasses.replace(datagram, delay=datagram.delay + extra)]

        return self._add("delay", delay, src, dst, when)

    def reorder(self, probability: float = 0.5, *, hold: float = 0.05, src: Selector = None,
                dst: Selector = None, when: Callable[[Datagram], bool] | None = None) -> Rule:
        """Deliver datagrams out of order: each, with ``probability``, is held back at its
        socket until the next datagram for that socket has arrived, then delivered after it
        (the two swap places). A datagram that nothing overtakes within ``hold`` seconds is
        delivered then. One datagram is held per socket at a time: the one that overtakes it
        is never held itself, so with probability 1 pairs of datagrams swap."""
        chance = _probability(probability, "reorder probability")
        wait = _seconds(hold, "hold")

        def reorder(datagram: Datagram) -> list[Datagram] | None:
            if datagram.random.random() < chance:
                return [dataclasses.replace(datagram, hold=wait)]
            return None

        return self._add("reorder", reorder, src, dst, when)

    def corrupt(self, probability: float = 1.0, *, bits: int = 1, src: Selector = None,
                dst: Selector = None, when: Callable[[Datagram], bool] | None = None) -> Rule:
        """Flip ``bits`` randomly chosen bits in datagrams, each with ``probability``."""
        chance = _probability(probability, "corrupt probability")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ConfigurationError(f"bits must be a positive int, not {bits!r}")

        def corrupt(datagram: Datagram) -> list[Datagram] | None:
            rng = datagram.random
            if rng.random() >= chance or not datagram.data:
                return None
            data = bytearray(datagram.data)
            for position in rng.sample(range(len(data) * 8), min(bits, len(data) * 8)):
                data[position // 8] ^= 1 << (position % 8)
            return [dataclasses.replace(datagram, data=bytes(data))]

        return self._add("corrupt", corrupt, src, dst, when)

    def rule(self, action: RuleAction, *, src: Selector = None, dst: Selector = None,
             when: Callable[[Datagram], bool] | None = None) -> Rule:
        """A rule of your own: ``action(datagram)`` returns ``None`` (leave it as it is) or the
        datagrams to deliver instead: ``[]`` drops it, several duplicate it,
        ``dataclasses.replace(datagram, data=…, delay=…)`` changes it. Counted like the
        built-in rules (fewer, more, or changed bytes)."""
        if not callable(action):
            raise ConfigurationError("a rule is a function of a Datagram")
        return self._add("rule", action, src, dst, when)

    def partition(self, a: Selector, b: Selector) -> Rule:
        """Cut ``a`` and ``b`` apart: datagrams between them are dropped both ways until
        :meth:`heal` (or the returned rule's :meth:`~Rule.remove`)."""
        side_a, side_b = _selector_set(a), _selector_set(b)
        if not side_a or not side_b:
            raise ConfigurationError("a partition needs two non-empty sides")
        rule = Rule(self, "partition", lambda datagram: [], src=None, dst=None, when=None)
        self._partitions.append((rule, side_a, side_b))
        return rule

    def heal(self) -> None:
        """Remove every partition."""
        self._partitions.clear()

    def clear(self) -> None:
        """Remove every rule and partition (counters stay)."""
        self._rules.clear()
        self._partitions.clear()

    @property
    def rules(self) -> list[Rule]:
        """The rules in force, in the order they apply (partitions not included)."""
        return list(self._rules)

    def _add(self, kind: str, action: RuleAction, src: Selector, dst: Selector,
             when: Callable[[Datagram], bool] | None) -> Rule:
        rule = Rule(self, kind, action, src=src, dst=dst, when=when)
        self._rules.append(rule)
        return rule

    def _remove(self, rule: Rule) -> None:
        if rule in self._rules:
            self._rules.remove(rule)
        self._partitions = [entry for entry in self._partitions if entry[0] is not rule]

    # -- binding -------------------------------------------------------------------------------

    def bind(self, endpoint: DatagramEndpoint) -> None:
        """Attach ``endpoint`` at ``endpoint.address`` (the
        :class:`~clusterrpc.transports.datagrams.DatagramNetwork` protocol; see the module
        docstring for the address model). Raises :class:`~clusterrpc.errors.TransportError`
        for an address that is taken."""
        address = endpoint.address
        if address.host is None or address.port is None:
            raise TransportError(f"cannot listen on {address}: no host and port")
        if address.multicast:
            group = (_norm_host(address.host), address.port)
            if group[1] == 0:
                raise TransportError(f"cannot join {address}: a group needs a port")
            sock = _Socket(endpoint, _norm_host(address.iface or address.host), group[1], group)
            self._groups.setdefault(group, []).append(sock)
            bound = address
        else:
            host = _norm_host(address.host)
            if isinstance(endpoint, GroupSender) and endpoint.group is not None:
                host = _norm_host(endpoint.group.iface or host)  # as its socket binds
            port = address.port or self._free_port()
            if (host, port) in self._unicast:
                raise TransportError(
                    f"cannot listen on {address}: {_host_port(host, port)} is already bound "
                    "on this memory network"
                )
            sock = _Socket(endpoint, host, port, None)
            self._unicast[(host, port)] = sock
            bound = Address("udp", host=host, port=port)
        self._sockets.append(sock)
        sock.transport = MemoryTransport(self, sock)
        endpoint.connection_made(sock.transport)
        endpoint.bound_to(bound)

    def _free_port(self) -> int:
        taken = {port for _, port in self._unicast}
        while self._next_port in taken:
            self._next_port += 1
        if self._next_port > 65535:
            raise TransportError("no free port left on this memory network")
        port = self._next_port
        self._next_port += 1
        return port

    def _unbind(self, sock: _Socket) -> None:
        sock.closed = True
        if sock.group is not None:
            members = self._groups.get(sock.group, [])
            if sock in members:
                members.remove(sock)
            if not members:
                self._groups.pop(sock.group, None)
        elif self._unicast.get((sock.host, sock.port)) is sock:
            del self._unicast[(sock.host, sock.port)]
        if sock in self._sockets:
            self._sockets.remove(sock)
        held = self._held.pop(sock, None)
        if held is not None:
            held[1].cancel()
            self._lost(sock, held[0])

    # -- sending -------------------------------------------------------------------------------

    def _source(self, sock: _Socket) -> tuple[str, int]:
        """The address ``sock``'s datagrams come from (module docstring)."""
        if not sock.wildcard:
            return sock.host, sock.port
        v6 = sock.host == "::"
        for other in self._sockets:
            if (other.messenger is sock.messenger and other.messenger is not None
                    and not other.wildcard and (":" in other.host) == v6):
                return other.host, sock.port
        return sock.host, sock.port

    def _receivers(self, host: str, port: int) -> list[_Socket]:
        if _is_multicast(host):
            return list(self._groups.get((host, port), ()))
        sock = self._unicast.get((host, port))
        if sock is None:
            sock = self._unicast.get(("::" if ":" in host else "0.0.0.0", port))  # noqa: S104
        return [] if sock is None else [sock]

    def _link(self, source: str, receiver: str) -> random.Random:
        key = f"{self.seed}|{source}|{receiver}"
        rng = self._links.get(key)
        if rng is None:
            rng = self._links[key] = random.Random(key)  # noqa: S311 - reproducible, not secret
        return rng

    @staticmethod
    def _labels(node: str | None, host: str, port: int,
                group: tuple[str, int] | None = None) -> frozenset[str]:
        labels = {host, _host_port(host, port)}
        if node is not None:
            labels.add(node)
        if group is not None:
            labels.update((group[0], _host_port(*group)))
        return frozenset(labels)

    def _record(self, what: str, number: int, source: str, receiver: str) -> None:
        if self.trace:
            self.events.append((what, number, source, receiver))

    def _send(self, sender: _Socket, data: bytes, destination: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._switch_loop(loop)
        if len(data) > MAX_DATAGRAM:  # as the kernel: EMSGSIZE, reported to the protocol
            loop.call_soon(sender.endpoint.error_received,
                           OSError(errno.EMSGSIZE, "Message too long"))
            return
        host, port = _norm_host(destination[0]), destination[1]
        number = next(self._numbers)
        self.sent += 1
        source = self._source(sender)
        source_name = f"{sender.node}@{_host_port(*source)}"
        self._record("sent", number, source_name, _host_port(host, port))
        receivers = self._receivers(host, port)
        if not receivers:
            self.undeliverable += 1
            self._record("undeliverable", number, source_name, _host_port(host, port))
            return
        source_labels = self._labels(sender.node, *source)
        for receiver in receivers:
            at = self._source(receiver)  # a wildcard socket is known by its node's host
            receiver_name = f"{receiver.node}@{_host_port(*at)}"
            receiver_labels = self._labels(receiver.node, *at, receiver.group)
            original = Datagram(
                data=data, source=source, destination=(host, port), sender=sender.node,
                receiver=receiver.node, receiver_address=at,
                multicast=receiver.group is not None, number=number,
                random=self._link(source_name, receiver_name),
            )  # fmt: skip
            for datagram in self._apply(original, source_labels, receiver_labels):
                if datagram.delay > 0:
                    self.delayed += 1
                self._enqueue(loop, receiver, datagram)

    def _apply(self, datagram: Datagram, source: frozenset[str],
               receiver: frozenset[str]) -> list[Datagram]:
        source_name = f"{datagram.sender}@{_host_port(*datagram.source)}"
        receiver_name = f"{datagram.receiver}@{_host_port(*datagram.receiver_address)}"
        for rule, side_a, side_b in self._partitions:
            if ((not side_a.isdisjoint(source) and not side_b.isdisjoint(receiver))
                    or (not side_b.isdisjoint(source) and not side_a.isdisjoint(receiver))):
                rule.hits += 1
                self.dropped += 1
                self._record("dropped", datagram.number, source_name, receiver_name)
                return []
        datagrams = [datagram]
        for rule in list(self._rules):
            after: list[Datagram] = []
            for item in datagrams:
                result = rule.apply(item) if rule.matches(item, source, receiver) else None
                if result is None:
                    after.append(item)
                    continue
                if not result:
                    self.dropped += 1
                    self._record("dropped", item.number, source_name, receiver_name)
                for _ in range(len(result) - 1):
                    self.duplicated += 1
                    self._record("duplicated", item.number, source_name, receiver_name)
                for changed in result:
                    if changed.data != item.data:
                        self.corrupted += 1
                        self._record("corrupted", item.number, source_name, receiver_name)
                after.extend(result)
            datagrams = after
        return datagrams

    # -- delivering ----------------------------------------------------------------------------

    def _switch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start over in another event loop: what the old one still held is lost."""
        for _, _, sock, datagram in self._queue:
            self._lost(sock, datagram)
        self._queue.clear()
        for sock, (datagram, timer) in list(self._held.items()):
            timer.cancel()
            self._lost(sock, datagram)
        self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_when = math.inf
        self._loop = loop

    def _enqueue(self, loop: asyncio.AbstractEventLoop, receiver: _Socket,
                 datagram: Datagram) -> None:
        due = loop.time() + datagram.delay
        heapq.heappush(self._queue, (due, next(self._order), receiver, datagram))
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._queue:
            return
        due = self._queue[0][0]
        if self._timer is not None:
            if self._timer_when <= due:
                return
            self._timer.cancel()
        self._timer_when = due
        if due <= loop.time():
            self._timer = loop.call_soon(self._pump)
        else:
            self._timer = loop.call_at(due, self._pump)

    def _pump(self) -> None:
        """Deliver what is due, in order; what is sent meanwhile waits for the next round."""
        loop = self._loop
        assert loop is not None
        self._timer = None
        self._timer_when = math.inf
        now = loop.time() + _EPSILON
        last = next(self._order)
        ready = []
        while self._queue and self._queue[0][0] <= now and self._queue[0][1] < last:
            ready.append(heapq.heappop(self._queue))
        for _, _, sock, datagram in ready:
            self._arrive(loop, sock, datagram)
        self._arm(loop)

    def _arrive(self, loop: asyncio.AbstractEventLoop, sock: _Socket, datagram: Datagram) -> None:
        if sock.closed:
            self._lost(sock, datagram)
            return
        held = self._held.pop(sock, None)
        if held is not None:  # this one overtakes the datagram held back
            held[1].cancel()
            self._deliver(loop, sock, datagram)
            self._deliver(loop, sock, held[0])
            return
        if datagram.hold is not None:
            self.reordered += 1
            self._record("held", datagram.number, *self._names(sock, datagram))
            timer = loop.call_later(datagram.hold, self._release, sock)
            self._held[sock] = (datagram, timer)
            return
        self._deliver(loop, sock, datagram)

    def _release(self, sock: _Socket) -> None:
        held = self._held.pop(sock, None)
        if held is not None and self._loop is not None:
            self._deliver(self._loop, sock, held[0])

    @staticmethod
    def _names(sock: _Socket, datagram: Datagram) -> tuple[str, str]:
        return (f"{datagram.sender}@{_host_port(*datagram.source)}",
                f"{sock.node}@{_host_port(*datagram.receiver_address)}")

    def _lost(self, sock: _Socket, datagram: Datagram) -> None:
        self.undeliverable += 1
        self._record("undeliverable", datagram.number, *self._names(sock, datagram))

    def _deliver(self, loop: asyncio.AbstractEventLoop, sock: _Socket,
                 datagram: Datagram) -> None:
        if sock.closed:
            self._lost(sock, datagram)
            return
        self.delivered += 1
        self._record("delivered", datagram.number, *self._names(sock, datagram))
        host, port = datagram.source
        source = (host, port, 0, 0) if ":" in host else (host, port)
        try:
            sock.endpoint.datagram_received(datagram.data, source)
        except Exception as error:  # as the event loop does for a protocol that raises
            loop.call_exception_handler({
                "message": "datagram_received raised (memory network)",
                "exception": error,
                "protocol": sock.endpoint,
            })  # fmt: skip

    def __repr__(self) -> str:
        return (f"<MemoryNetwork seed={self.seed} sockets={len(self._sockets)} "
                f"in_flight={self.in_flight}>")
