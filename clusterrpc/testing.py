"""Testing tools: an in-memory datagram network with fault injection, and a virtual clock.

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
order of due time, which is exact for equal delays. On a real clock, datagrams drawn different
delays from a range keep their order between runs only when their due times differ by more than
the event loop's timing jitter; on a :class:`VirtualClock` (below) there is no jitter, and the
whole simulation (which datagram arrives when, every timeout) is the same in every run.

**Time.** The network reads no clock of its own: due times, holds and :meth:`~MemoryNetwork.settle`
use the running event loop's ``time()``, ``call_at`` and ``call_later``. So it runs on real time
under an ordinary event loop, and on virtual time under a :class:`VirtualClock`'s loop, where a
simulation with minutes of delays and timeouts finishes in milliseconds::

    clock = VirtualClock(autojump_threshold=0)     # jump to the next timer whenever idle
    run(scenario(), clock=clock)                   # like asyncio.run, on the clock's loop

**Virtual time.** :class:`VirtualClock` is modelled on trio's ``MockClock``: its time starts at
``start`` and advances only at ``rate`` virtual seconds per real second (0 by default: it stands
still), by :meth:`~VirtualClock.jump`, and, with a finite ``autojump_threshold``, by itself
whenever its event loop (:meth:`VirtualClock.new_event_loop`, a :class:`VirtualEventLoop`) has
nothing to run and no I/O has arrived for that many real seconds: it then jumps straight to the
loop's next timer, so ``await asyncio.sleep(3600)`` returns at once and timers fire in order of
due time. Everything that asks the loop for the time (``loop.time()``, ``call_later``,
``asyncio.sleep``, ``asyncio.timeout``, ``wait_for``, the call and gather deadlines of nodes)
sees virtual time; real sockets keep working on the loop. :func:`run` runs a coroutine on such
a loop, like :func:`asyncio.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import heapq
import ipaddress
import itertools
import math
import random
import selectors
import threading
import time
import weakref
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from clusterrpc.errors import ConfigurationError, TransportError
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.datagrams import MAX_DATAGRAM, DatagramEndpoint
from clusterrpc.transports.multicast import GroupSender

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = [
    "Datagram",
    "MemoryNetwork",
    "MemoryTransport",
    "Rule",
    "Selector",
    "VirtualClock",
    "VirtualEventLoop",
    "run",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

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
        ``timeout`` seconds of the loop's time (virtual seconds on a :class:`VirtualClock`: a
        simulation with long delays needs a longer ``timeout``, not a longer real wait)."""
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


# -- virtual time ------------------------------------------------------------------------------

_MAX_REAL_WAIT = 86400.0
"""The longest real wait of one ``select()`` (as asyncio's own limit; every selector takes it)."""


def _clock_number(value: object, what: str, *, infinite: bool = False) -> float:
    """``value`` as a float >= 0 (``inf`` only if ``infinite``), else ``TypeError`` (not a
    number) or ``ValueError`` (negative, NaN, infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    number = float(value)
    if math.isnan(number) or number < 0 or (math.isinf(number) and not infinite):
        bound = "a number >= 0 (inf allowed)" if infinite else "a finite number >= 0"
        raise ValueError(f"{what} must be {bound}, not {value!r}")
    return number


def _wake_up() -> None:
    """A callback that does nothing: scheduled to make a loop recompute its wait."""


class VirtualClock:
    """A clock for tests whose time is under the test's control (trio's ``MockClock``).

    ``start``: the time it reads at first (any finite number; event loops usually start near
    the machine's uptime, a virtual clock at 0). ``rate``: virtual seconds that pass per real
    second (0, the default, stands the clock still; 1 runs it at real speed from ``start``; 10
    ten times faster). ``autojump_threshold``: real seconds its event loop may sit idle before
    the clock jumps to the loop's next timer (``inf``, the default, never; 0 at once).

    The contract:

    * :meth:`current_time` never goes backwards. Time moves in three ways only: at ``rate``,
      by :meth:`jump`, and by autojump. Changing ``rate`` never changes the current reading:
      the new rate applies from then on.
    * Autojump (a finite threshold) applies to the loops made by :meth:`new_event_loop`. A loop
      is idle when it has no callback ready to run, no work outstanding in its executor
      (``run_in_executor``, ``asyncio.to_thread``, ``getaddrinfo``) and a timer scheduled; if it
      stays so, with no I/O arriving on its sockets, for ``autojump_threshold`` real seconds,
      the clock jumps to that timer's due time (at most one day at a time) and the loop runs
      it. Timers thus fire in order of due time, and at rate 0 each exactly at its due time
      (within the loop's clock resolution), so ``await asyncio.sleep(3600)`` in an otherwise
      idle loop returns after about ``autojump_threshold`` real seconds with the clock exactly
      3600 seconds on. A loop with no timer scheduled waits for I/O as any
      event loop does. Work the clock cannot see (another process, a thread of your own)
      races with autojump: give such tests a threshold longer than that work takes (0 is for
      simulations inside the loop, such as a :class:`MemoryNetwork`).
    * With ``autojump_threshold=inf`` the loop behaves like an ordinary event loop whose time
      runs at ``rate``: a timer ``d`` seconds ahead fires after ``d / rate`` real seconds
      (never, at rate 0, unless the clock is jumped).
    * The clock is thread-safe. :meth:`jump` and the setters wake up its running loops, so a
      jump from another thread takes effect at once. Several loops may share one clock; each
      autojumps on its own, and a jump moves the time of all.

    A clock holds no global state: make one per test.
    """

    __slots__ = ("__weakref__", "_autojump_threshold", "_base", "_lock", "_loops", "_rate",
                 "_real_base")

    def __init__(self, *, start: float = 0.0, rate: float = 0.0,
                 autojump_threshold: float = math.inf) -> None:
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise TypeError(f"start must be a number, not {type(start).__name__}")
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, not {start!r}")
        self._lock = threading.Lock()
        self._base = float(start)
        self._real_base = time.monotonic()
        self._rate = _clock_number(rate, "rate")
        self._autojump_threshold = _clock_number(autojump_threshold, "autojump_threshold",
                                                 infinite=True)
        self._loops: weakref.WeakSet[VirtualEventLoop] = weakref.WeakSet()

    def current_time(self) -> float:
        """The clock's time, in seconds."""
        with self._lock:
            return self._now()

    def _now(self) -> float:
        if self._rate == 0.0:
            return self._base
        return self._base + self._rate * (time.monotonic() - self._real_base)

    def jump(self, seconds: float) -> None:
        """Move the time ``seconds`` ahead at once (``ValueError`` for a negative or infinite
        amount: time never goes backwards). Timers that come due meanwhile fire when their loop
        next looks at its timers, in order of due time."""
        amount = _clock_number(seconds, "a jump")
        with self._lock:
            self._base += amount
        self._wake_loops()

    def reading(self) -> tuple[float, float, float]:
        """``(time, rate, autojump_threshold)`` read together: what a
        :class:`VirtualEventLoop` needs to decide how long to wait."""
        with self._lock:
            return self._now(), self._rate, self._autojump_threshold

    def attach(self, loop: VirtualEventLoop) -> None:
        """Register ``loop`` to be woken when the clock jumps or its settings change (a
        :class:`VirtualEventLoop` attaches itself; the clock holds it weakly)."""
        self._loops.add(loop)

    def advance_to(self, target: float) -> None:
        """Jump to ``target`` if that is ahead; never back (the loop's autojump). Unlike
        :meth:`jump`, the loops are not woken: the caller is the loop that waits."""
        with self._lock:
            now = self._now()
            if target > now:
                # At rate 0 the reading becomes ``target`` exactly, not a float sum near it.
                self._base = target if self._rate == 0.0 else self._base + (target - now)

    @property
    def rate(self) -> float:
        """Virtual seconds per real second (>= 0, finite; ``ValueError`` otherwise)."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        rate = _clock_number(value, "rate")
        with self._lock:
            self._base = self._now()
            self._real_base = time.monotonic()
            self._rate = rate
        self._wake_loops()

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of idleness before the clock jumps to the next timer (>= 0, ``inf``
        for never; ``ValueError`` otherwise)."""
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, value: float) -> None:
        threshold = _clock_number(value, "autojump_threshold", infinite=True)
        with self._lock:
            self._autojump_threshold = threshold
        self._wake_loops()

    def new_event_loop(self) -> VirtualEventLoop:
        """A new asyncio event loop on this clock (a :class:`VirtualEventLoop`). Close it when
        done, as any event loop (:func:`run` does)."""
        return VirtualEventLoop(self)

    def _wake_loops(self) -> None:
        """Make every loop of this clock that runs in another thread recompute its wait (the
        loop running in this thread, if any, does so before it next waits)."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop in list(self._loops):
            if loop is current or loop.is_closed() or not loop.is_running():
                continue
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(_wake_up)

    def __repr__(self) -> str:
        return (f"<VirtualClock time={self.current_time():.6f} rate={self._rate} "
                f"autojump_threshold={self._autojump_threshold}>")


class _VirtualSelector(selectors.BaseSelector):
    """The selector of a :class:`VirtualEventLoop`: the platform's selector for real I/O, and
    the autojump of the clock where the loop would otherwise wait for its next timer.

    asyncio calls ``select(timeout)`` with ``timeout`` the seconds of loop time until its next
    timer (0 when callbacks are ready, ``None`` when no timer is scheduled). This waits for
    real I/O for as long as that takes at the clock's rate, or ``autojump_threshold`` real
    seconds if that is sooner; if nothing arrived after the threshold, it jumps the clock to the
    timer's due time."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self.outstanding = 0
        """Executor jobs not finished: while there are any, the clock does not autojump."""

    def register(self, fileobj: FileDescriptorLike, events: int,
                 data: Any = None) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(self, fileobj: FileDescriptorLike, events: int,
               data: Any = None) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return self._selector.select(timeout)  # ready callbacks, or no timer to jump to
        clock = self._clock
        now, rate, threshold = clock.reading()
        if self.outstanding:
            threshold = math.inf
        natural = timeout / rate if rate > 0.0 else math.inf  # real seconds until the timer
        wait = min(natural, threshold)
        if math.isinf(wait):
            return self._selector.select(None)  # only I/O (or a wake-up) moves this loop on
        if wait > _MAX_REAL_WAIT:
            return self._selector.select(_MAX_REAL_WAIT)
        events = self._selector.select(wait)
        if not events and wait == threshold:
            clock.advance_to(now + timeout)
        return events

    def close(self) -> None:
        self._selector.close()

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._selector.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._selector.get_map()


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio selector event loop whose ``time()`` is a :class:`VirtualClock`'s (made by
    :meth:`VirtualClock.new_event_loop`; see the clock for when time moves).

    Apart from time it is the platform's ordinary selector event loop: sockets, pipes,
    subprocesses, signals and executors work as usual. What it changes:

    * ``time()`` reads the clock, and so do every timer, ``asyncio.sleep``, ``asyncio.timeout``
      and ``wait_for`` on it;
    * where the loop would wait for its next timer, it waits in real time as the clock's
      ``rate`` and ``autojump_threshold`` say, and may jump the clock to that timer;
    * work handed to its executor (``run_in_executor``, hence ``asyncio.to_thread`` and
      ``getaddrinfo``) keeps the clock from autojumping until it is done;
    * ``shutdown_default_executor`` waits for the executor's threads however long that takes
      (its ``timeout``, virtual seconds here, would be jumped to at once and is ignored).
    """

    def __init__(self, clock: VirtualClock) -> None:
        self._virtual_clock = clock
        self._virtual_selector = _VirtualSelector(clock)
        super().__init__(self._virtual_selector)
        clock.attach(self)

    @property
    def clock(self) -> VirtualClock:
        """The clock this loop runs on."""
        return self._virtual_clock

    def time(self) -> float:
        """The clock's time (:meth:`VirtualClock.current_time`)."""
        return self._virtual_clock.current_time()

    def run_in_executor(self, executor: concurrent.futures.Executor | None,
                        func: Callable[[*_Ts], _T], *args: *_Ts) -> asyncio.Future[_T]:
        """As asyncio's, and the clock does not autojump until the job is done."""
        future = super().run_in_executor(executor, func, *args)
        self._virtual_selector.outstanding += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, future: asyncio.Future[Any]) -> None:
        self._virtual_selector.outstanding -= 1

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """As asyncio's, without a deadline (see the class docstring)."""
        await super().shutdown_default_executor()


def run(main: Coroutine[Any, Any, _T], *, clock: VirtualClock | None = None,
        debug: bool | None = None) -> _T:
    """Run the coroutine ``main`` to completion on a new :class:`VirtualEventLoop` of
    ``clock`` and return its result, like :func:`asyncio.run` (which this is, with the clock's
    loop as the loop factory): the loop is set as the current event loop meanwhile, remaining
    tasks are cancelled and the loop is closed at the end; ``debug`` as there. Without a
    ``clock``, a fresh ``VirtualClock(autojump_threshold=0)``: time starts at 0, stands still
    while anything is ready to run, and jumps to the next timer whenever nothing is. Raises
    ``RuntimeError`` when called from a running event loop."""
    if clock is None:
        clock = VirtualClock(autojump_threshold=0.0)
    with asyncio.Runner(debug=debug, loop_factory=clock.new_event_loop) as runner:
        return runner.run(main)
