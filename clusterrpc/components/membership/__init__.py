"""Membership: who is in the cluster, found by SWIM failure detection over one-way calls
(``spec/membership.md``). :class:`Membership` runs it on a node; the state machine itself,
without I/O, is :class:`~clusterrpc.components.membership.protocol.MembershipProtocol`."""

from clusterrpc.components.membership.driver import Membership
from clusterrpc.components.membership.protocol import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Alive,
    Failed,
    Joined,
    Left,
    Member,
    MembershipConfig,
    MembershipEvent,
    MembershipProtocol,
    Suspected,
    Updated,
)

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "SUSPECT",
    "Alive",
    "Failed",
    "Joined",
    "Left",
    "Member",
    "Membership",
    "MembershipConfig",
    "MembershipEvent",
    "MembershipProtocol",
    "Suspected",
    "Updated",
]
