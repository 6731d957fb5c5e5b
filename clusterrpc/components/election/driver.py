"""``Election``: leader election on a :class:`~clusterrpc.Node` (``spec/election.md``).

::

    election = Election(node, voters={"n1": "udp://10.0.0.1:7946", "n2": …, "n3": …},
                        state_dir="/var/lib/clusterrpc/election")
    async with node, election:
        leader = await election.wait_for_leader(timeout=10)
        async for change in election.changes():
            if change.is_leader:
                ...   # act, passing election.term (the fencing token) to every call that acts

A thin driver: it serves the protocol's messages as one-way methods of the service
``election`` (each a signed, replay-checked packet of its own; the sender is the node the
packet layer authenticated), feeds them and the time to
:class:`~clusterrpc.components.election.protocol.ElectionProtocol`, writes the term and vote
durably (temporary file, fsync, rename, fsync of the directory) **before** it sends what the
protocol produced, sends it, and wakes the protocol when it asks. It also serves
``election.status()`` and ``election.transfer(to)`` (normal calls) for admins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from clusterrpc.components.election.protocol import (
    KINDS,
    ElectionConfig,
    ElectionProtocol,
    LeaderChange,
    Outgoing,
    PersistentState,
)
from clusterrpc.errors import (
    ClusterRPCError,
    ConfigurationError,
    ConnectionClosedError,
    Fault,
    FaultCode,
    NoLeaderError,
    NotLeaderError,
    TransferError,
)
from clusterrpc.rpc import current_call, oneway, remote

__all__ = ["Election", "StateFile"]

log = logging.getLogger("clusterrpc.election")

_CHANGE_QUEUE = 1024
"""Leadership changes kept for one slow ``changes()`` reader before it loses the oldest."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


class StateFile:
    """The persisted term and vote of one election: ``<state_dir>/<name>.json``.

    :meth:`save` replaces the file atomically and durably: it writes a temporary file in the
    same directory, fsyncs it, renames it over the old one and fsyncs the directory, so after
    a crash at any point the file holds either the old or the new state, whole. :meth:`load`
    raises :class:`~clusterrpc.errors.ConfigurationError` for a file that exists but cannot
    be read back: starting with a forgotten vote could elect two leaders in one term, so an
    unreadable state is never silently reset (delete the file only if the whole cluster's
    terms are known to be ahead of it)."""

    def __init__(self, state_dir: str | os.PathLike[str], name: str) -> None:
        if not _SAFE_NAME.match(name):
            raise ConfigurationError(f"an election name is 1-100 characters of A-Z a-z 0-9 _ . "
                                     f"-, not {name!r}")
        self.directory = Path(state_dir)
        self.path = self.directory / f"{name}.json"

    def load(self) -> PersistentState | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigurationError(f"cannot read the election state {self.path}: "
                                     f"{error.strerror}") from error
        try:
            raw = json.loads(text)
            term, voted_for = raw["term"], raw["voted_for"]
            if isinstance(term, bool) or not isinstance(term, int) or term < 0 or not (
                    voted_for is None or isinstance(voted_for, str)):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise ConfigurationError(f"the election state {self.path} is corrupt; refusing to "
                                     "start with a forgotten vote (see StateFile)") from None
        return PersistentState(term, voted_for)

    def save(self, state: PersistentState) -> None:
        """Write ``state`` durably. Raises ``OSError`` (the caller must not send anything that
        depends on it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"term": state.term, "voted_for": state.voted_for,
                           "format": 1}).encode()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class _Endpoint:
    """The protocol's messages as one-way methods, and the admin methods."""

    def __init__(self, election: Election) -> None:
        self._election = election

    def _received(self, kind: str, body: Any) -> None:
        sender = current_call().node
        if sender is None:  # unauthenticated (an insecure HTTP endpoint): never acted on
            return
        self._election.received(kind, body, sender=sender)

    @oneway
    def request_vote(self, body: dict[str, Any]) -> None:
        self._received("request_vote", body)

    @oneway
    def vote(self, body: dict[str, Any]) -> None:
        self._received("vote", body)

    @oneway
    def heartbeat(self, body: dict[str, Any]) -> None:
        self._received("heartbeat", body)

    @oneway
    def heartbeat_ack(self, body: dict[str, Any]) -> None:
        self._received("heartbeat_ack", body)

    @oneway
    def timeout_now(self, body: dict[str, Any]) -> None:
        self._received("timeout_now", body)

    @remote
    def status(self) -> dict[str, Any]:
        """This node's view: name, role, term, leader, voted_for, voters (with addresses),
        ``last_heartbeat`` (seconds since a follower heard its leader, or nil), ``acks`` (the
        leader: seconds since each voter answered) and counters."""
        return self._election.status()

    @remote
    async def transfer(self, to: str = "") -> dict[str, Any]:
        """Hand the leadership over to ``to`` (a voter name; "" for the most up-to-date
        voter). Run on a follower, it asks the leader to do it. Answers ``{"from", "to",
        "term"}`` once the new leader is known; a fault if it did not happen within the
        transfer timeout."""
        election = self._election
        try:
            if not election.is_leader:
                leader = election.leader
                address = None if leader is None else election.address_of(leader)
                if address is None:
                    raise Fault(FaultCode.APPLICATION_ERROR,
                                f"{election.node.name} knows no leader to transfer from")
                answer: Any = await election.node.peer(address).call(
                    f"{election.service}.transfer", to)
                return dict(answer)
            old = election.node.name
            new = await election.transfer(to=to or None)
        except (NotLeaderError, TransferError, ConfigurationError) as error:
            raise Fault(FaultCode.APPLICATION_ERROR, str(error)) from None
        return {"from": old, "to": new, "term": election.term}


class Election:
    """Leader election among ``voters`` on ``node`` (module docstring).

    ``voters``: the fixed voter set, this node included — a mapping of node name to the
    address its ``election`` service is reached at (``udp://``, ``tcp://``…), or node names
    alone when ``membership`` is given (each voter's address is then the first address of its
    member in the membership view, looked up at each send). The set never follows the
    membership view: adding or removing voters without joint consensus could elect two
    leaders, so a change is a configuration change (one voter at a time, restarting the
    voters). ``state_dir``: the directory of the persisted term and vote
    (``<state_dir>/<name>.json``, see :class:`StateFile`); ``None`` keeps them in memory only,
    which is safe only for tests: a restarted voter could vote twice in one term.
    ``name``: the service name of its methods and the state file's name. ``rng``: the source
    of the random timeouts (seed it for a replayable simulation). ``election_timeout``,
    ``heartbeat_interval`` and the other keywords are
    :class:`~clusterrpc.components.election.protocol.ElectionConfig`'s.

    ``async with election:`` (the node started first) starts it; leaving the block hands the
    leadership over if this node has it (:meth:`transfer`, bounded by the transfer timeout),
    then stops. Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad setting, a
    voter set without this node, or an unreadable state file.
    """

    def __init__(self, node: Any, *, voters: Mapping[str, str] | Iterable[str],
                 state_dir: str | os.PathLike[str] | None, name: str = "election",
                 membership: Any = None, rng: random.Random | None = None,
                 **timers: Any) -> None:
        try:
            self.config = ElectionConfig(**timers)
        except TypeError as error:
            raise ConfigurationError(f"Election: {error}") from None
        self.node = node
        self.service = name
        if isinstance(voters, Mapping):
            self._addresses: dict[str, str] = {str(key): str(value)
                                               for key, value in voters.items()}
        else:
            if isinstance(voters, str):
                raise ConfigurationError("voters is a list or a mapping of node names, "
                                         "not one string")
            names = list(voters)
            if membership is None:
                raise ConfigurationError("voters given by name need membership= to find their "
                                         "addresses (or pass a mapping of name to address)")
            self._addresses = dict.fromkeys(names, "")
        self.voters = tuple(sorted(self._addresses))
        if node.name not in self._addresses:
            raise ConfigurationError(f"node {node.name!r} is not one of the voters "
                                     f"{list(self.voters)}")
        self._membership = membership
        self._store = None if state_dir is None else StateFile(state_dir, name)
        self._rng = rng or random.Random()  # noqa: S311 - timeouts, not secrets
        self.protocol: ElectionProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")
        self._sending: asyncio.Task[None] | None = None
        self._outbox: list[Outgoing] = []
        self._unsaved: PersistentState | None = None
        self._subscribers: set[asyncio.Queue[LeaderChange | None]] = set()
        self._leader_known = asyncio.Event()
        self._served = False
        self._closed = False
        self._frozen_until = float("-inf")
        self._backlog: list[tuple[str, Any, str]] = []
        self.send_errors = 0
        """Messages the node could not send (counted, logged at debug level)."""
        self.persist_errors = 0
        """Failed writes of the state file (each one holds back every message until a write
        succeeds)."""

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the persisted state and start as a follower (the node must be started).
        Idempotent. Raises :class:`~clusterrpc.errors.ConfigurationError` for an unreadable
        state file."""
        if self.protocol is not None:
            return
        if not self.node.started:
            raise ConnectionClosedError("start the node before its election "
                                        "(`async with node, election:`)")
        persisted = None if self._store is None else await asyncio.to_thread(self._store.load)
        self.protocol = ElectionProtocol(name=self.node.name, voters=self.voters,
                                         config=self.config, rng=self._rng,
                                         persisted=persisted)
        if not self._served:
            self.node.serve(_Endpoint(self), name=self.service)
            self._served = True
        self._closed = False
        log.info("election %s: %s starts at term %d (voted for %s)", self.service,
                 self.node.name, self.protocol.term, self.protocol.voted_for)
        self.protocol.start(self._now())
        self._after_step()

    async def stop(self, *, transfer: bool = True) -> None:
        """Hand the leadership over (if this node leads and ``transfer``; failures are
        logged), send what is queued, and stop. Idempotent."""
        protocol = self.protocol
        if protocol is None or self._closed:
            return
        if transfer and protocol.is_leader and len(self.voters) > 1:
            try:
                await self.transfer()
            except (ClusterRPCError, OSError) as error:
                log.warning("election %s: no leadership transfer before stopping: %s",
                            self.service, error)
        self._closed = True
        self._leader_known.set()  # wake wait_for_leader() and transfer() to see the end
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._sending), 1.0)
            self._sending.cancel()
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # the end matters more than the oldest change
            queue.put_nowait(None)

    async def __aenter__(self) -> Election:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what users read -----------------------------------------------------------------------

    @property
    def leader(self) -> str | None:
        """The leader this node knows of (itself included), or ``None``."""
        return None if self.protocol is None else self.protocol.leader

    @property
    def term(self) -> int:
        """The current term: the fencing token to pass with every call a leader makes."""
        return 0 if self.protocol is None else self.protocol.term

    @property
    def is_leader(self) -> bool:
        return self.protocol is not None and not self._closed and self.protocol.is_leader

    @property
    def role(self) -> str:
        """``follower``, ``pre-candidate``, ``candidate`` or ``leader``."""
        return "follower" if self.protocol is None else self.protocol.role

    @property
    def counters(self) -> dict[str, int]:
        counts = {} if self.protocol is None else dict(self.protocol.counters)
        counts["send_errors"] = self.send_errors
        counts["persist_errors"] = self.persist_errors
        return counts

    def address_of(self, voter: str) -> str | None:
        """Where ``voter``'s election service is reached (``None``: unknown)."""
        address = self._addresses.get(voter)
        if address:
            return address
        membership = self._membership
        if membership is None:
            return None
        member = membership.view.get(voter)
        return None if member is None else member.address

    async def wait_for_leader(self, timeout: float | None = None) -> str:
        """The leader's name, once one is known (at once if one is). Raises
        :class:`~clusterrpc.errors.NoLeaderError` after ``timeout`` seconds without one, and
        :class:`~clusterrpc.errors.ConnectionClosedError` if the election is not running."""
        if self.protocol is None or self._closed:
            raise ConnectionClosedError("the election is not running")
        try:
            async with asyncio.timeout(timeout):
                while self.leader is None:
                    self._leader_known.clear()
                    await self._leader_known.wait()
                    if self._closed:
                        raise ConnectionClosedError("the election stopped")
        except TimeoutError:
            raise NoLeaderError(f"no leader among {list(self.voters)} within {timeout} s "
                                f"(term {self.term})") from None
        leader = self.leader
        assert leader is not None
        return leader

    async def changes(self) -> AsyncIterator[LeaderChange]:
        """Leadership changes from now on, in order, until :meth:`stop`: each new leader (or
        ``None`` when the leader is lost), each new term of a known leader, and this node
        winning or losing. A reader more than 1,024 changes behind loses the oldest (logged);
        :attr:`leader` and :attr:`term` are always current."""
        queue: asyncio.Queue[LeaderChange | None] = asyncio.Queue(_CHANGE_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                change = await queue.get()
                if change is None:
                    return
                yield change
        finally:
            self._subscribers.discard(queue)

    async def transfer(self, to: str | None = None) -> str:
        """Hand the leadership to ``to`` (a voter), or to the voter that answered the newest
        heartbeat; returns the new leader's name once this node knows it. The target campaigns
        at once with a higher term and the others vote for it despite their stickiness.
        Raises :class:`~clusterrpc.errors.NotLeaderError` unless this node is the leader,
        :class:`~clusterrpc.errors.ConfigurationError` for a ``to`` that is not another voter
        (or no voter to hand over to), and :class:`~clusterrpc.errors.TransferError` if no
        other leader is known within the transfer timeout (this node may then still lead)."""
        protocol = self.protocol
        if protocol is None or self._closed:
            raise NotLeaderError("the election is not running")
        target = protocol.transfer(self._now(), to=to)
        log.info("election %s: %s hands the leadership (term %d) to %s", self.service,
                 self.node.name, protocol.term, target)
        self._after_step()
        try:
            async with asyncio.timeout(self.config.transfer_deadline * 1.5):
                while protocol.leader in (None, self.node.name):
                    self._leader_known.clear()
                    await self._leader_known.wait()
                    if self._closed:
                        raise TransferError("the election stopped during the transfer")
        except TimeoutError:
            raise TransferError(f"{target} did not take over within "
                                f"{self.config.transfer_deadline} s") from None
        leader = protocol.leader
        assert leader is not None
        return leader

    def lease_remaining(self) -> float:
        """Seconds during which no other leader can have been elected, if clocks run at the
        same rate; 0.0 when there is no lease. **An optimisation only**, unsafe for
        correctness under clock jumps and process pauses (the pause may happen right after
        this returns): anything that must be correct uses the term as a fencing token
        (:func:`~clusterrpc.components.election.fenced`). Raises
        :class:`~clusterrpc.errors.NotLeaderError` unless this node is the leader."""
        if not self.is_leader:
            raise NotLeaderError(f"{self.node.name} is not the leader", leader=self.leader)
        assert self.protocol is not None
        return max(self.protocol.lease_expiry() - self._now(), 0.0)

    def status(self) -> dict[str, Any]:
        """What ``election.status()`` answers (see :class:`_Endpoint`)."""
        if self.protocol is None:
            return {"name": self.node.name, "role": "stopped", "term": 0, "leader": None,
                    "voted_for": None, "voters": self._voter_rows(), "last_heartbeat": None,
                    "acks": {}, "counters": self.counters}
        status = self.protocol.describe(self._now())
        status["voters"] = self._voter_rows()
        status["counters"] = self.counters
        status["service"] = self.service
        return status

    def _voter_rows(self) -> list[dict[str, Any]]:
        return [{"name": voter, "address": self.address_of(voter) or ""}
                for voter in self.voters]

    # -- driving the protocol ------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def received(self, kind: str, body: Any, *, sender: str) -> None:
        """A message from the authenticated node ``sender`` (the endpoint calls this)."""
        protocol = self.protocol
        if protocol is None or self._closed or kind not in KINDS:
            return
        now = self._now()
        if now < self._frozen_until:
            self._backlog.append((kind, body, sender))
            return
        protocol.receive(kind, body, sender=sender, now=now)
        self._after_step()

    def _wake(self) -> None:
        self._timer = None
        self._timer_when = float("inf")
        protocol = self.protocol
        if protocol is None or self._closed:
            return
        now = self._now()
        if now < self._frozen_until:
            self._schedule(self._frozen_until)
            return
        protocol.tick(now)
        self._after_step()

    def _schedule(self, when: float) -> None:
        if when < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = when
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(when, loop.time()), self._wake)

    def _after_step(self) -> None:
        protocol = self.protocol
        assert protocol is not None
        output = protocol.take_output()
        if output.persist is not None:
            self._unsaved = output.persist
        if self._unsaved is not None and self._store is not None:
            # Durable before anything of this step is sent (a vote must survive a restart).
            # Synchronous on purpose: the state changes only at terms and votes, rarely,
            # and nothing may be sent meanwhile anyway.
            try:
                self._store.save(self._unsaved)
                self._unsaved = None
            except OSError as error:
                self.persist_errors += 1
                log.error("election %s: cannot write %s (%s): holding back %d messages",
                          self.service, self._store.path, error, len(output.messages))
                output.messages.clear()
                self._outbox.clear()
        else:
            self._unsaved = None
        if output.messages:
            self._outbox.extend(output.messages)
            if self._sending is None or self._sending.done():
                self._sending = asyncio.get_running_loop().create_task(self._send_all())
        if output.changes:
            self._publish(output.changes)
        if not self._closed:
            self._schedule(protocol.next_wakeup())

    async def _send_all(self) -> None:
        node = self.node
        while self._outbox:
            batch, self._outbox = self._outbox, []
            for message in batch:
                address = self.address_of(message.to)
                if address is None:
                    self.send_errors += 1
                    log.debug("election: no address for voter %s", message.to)
                    continue
                try:
                    await node.peer(address).call(f"{self.service}.{message.kind}",
                                                  message.body, oneway=True)
                except (ClusterRPCError, OSError) as error:
                    self.send_errors += 1
                    log.debug("election: cannot send %s to %s: %s", message.kind, address,
                              error)

    def _publish(self, changes: list[LeaderChange]) -> None:
        for change in changes:
            log.info("election %s: term %d leader %s (%s is %s)", self.service, change.term,
                     change.leader, self.node.name, change.role)
            for queue in self._subscribers:
                if queue.full():
                    queue.get_nowait()
                    log.warning("election: a changes() reader fell behind; oldest dropped")
                queue.put_nowait(change)
        self._leader_known.set()

    # -- testing -------------------------------------------------------------------------------

    def freeze(self, seconds: float) -> None:
        """Simulate a stalled process for ``seconds`` of the loop's clock: messages wait (as in
        a socket buffer) and timers run late, then everything runs at once, as after
        SIGSTOP/SIGCONT. For simulations where several nodes share one event loop."""
        until = self._now() + seconds
        if until > self._frozen_until:
            self._frozen_until = until
            asyncio.get_running_loop().call_at(until, self._thaw)

    def _thaw(self) -> None:
        protocol = self.protocol
        if protocol is None or self._closed or self._now() < self._frozen_until:
            return
        backlog, self._backlog = self._backlog, []
        now = self._now()
        protocol.tick(now)  # the late timers first, as a thawed process runs them
        for kind, body, sender in backlog:
            protocol.receive(kind, body, sender=sender, now=now)
        self._after_step()

