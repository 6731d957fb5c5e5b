"""Leader election over one-way calls: Raft's election with pre-vote, check-quorum, leader
stickiness, leadership transfer and fencing tokens (``spec/election.md``). :class:`Election`
runs it on a node; the state machine itself, without I/O, is
:class:`~clusterrpc.components.election.protocol.ElectionProtocol`."""

from clusterrpc.components.election.driver import Election, StateFile
from clusterrpc.components.election.fencing import Fence, fence_of, fenced
from clusterrpc.components.election.protocol import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    ElectionConfig,
    ElectionOutput,
    ElectionProtocol,
    LeaderChange,
    Outgoing,
    PersistentState,
)

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "PRE_CANDIDATE",
    "Election",
    "ElectionConfig",
    "ElectionOutput",
    "ElectionProtocol",
    "Fence",
    "LeaderChange",
    "Outgoing",
    "PersistentState",
    "StateFile",
    "fence_of",
    "fenced",
]
