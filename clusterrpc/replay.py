"""Replay protection: per-sender epochs and a sliding window over sequence numbers.

Theory of operation (``spec/packet.md``, "Replay protection")
---------------------------------------------------------------
Each sender numbers its packets 1, 2, 3 … within an *epoch* (one run of the sender; a restart
starts a new, larger epoch). A receiver keeps, per sender, the newest epoch it has accepted and,
for that epoch, a window of the last ``window`` sequence numbers as a bitmap, as IPsec's
anti-replay window does (RFC 4303 section 3.4.3):

* a sequence number above the window's top moves the window up;
* one inside the window is accepted once (reordering is fine, duplicates are not);
* one below the window is refused: it can no longer be told apart from a replay.

An epoch older than the newest accepted one is refused. A never-seen epoch (a sender's restart,
or this receiver's own restart) is accepted only if the packet's timestamp is within
``freshness`` seconds of the receiver's clock, so packets captured long ago cannot be replayed to
a receiver that has forgotten them.

:meth:`ReplayGuard.accept` must only be called for packets whose authenticator has been
verified: the window then moves only for genuine packets, and a forged packet with a huge
sequence number cannot push legitimate traffic out of it. This module does no I/O and reads no
clock: ``now`` is passed in.
"""

from __future__ import annotations

import collections

from clusterrpc.errors import ConfigurationError, ReplayError, StaleEpochError, TooOldError

__all__ = ["ReplayGuard"]


class _Window:
    __slots__ = ("bits", "top")

    def __init__(self, sequence: int) -> None:
        self.top = sequence  # highest sequence number accepted
        self.bits = 1  # bit i set: sequence (top - i) was accepted


class ReplayGuard:
    """Tracks senders' epochs and sequence windows.

    ``window``: sequence numbers remembered per sender (default 1024, as a power of two is not
    required). ``freshness``: seconds a never-seen epoch's packet timestamp may differ from
    ``now`` (default 30). ``max_senders``: senders remembered; the least recently heard one is
    forgotten beyond that, and its next packet is then judged as a never-seen epoch (fresh
    timestamps only), which bounds memory against a flood of names from key holders.
    """

    __slots__ = ("_mask", "_senders", "freshness", "max_senders", "window")

    MAX_WINDOW = 1 << 16
    """Largest window: a bitmap of 65,536 bits (8 KiB) per sender is already generous."""

    def __init__(
        self, *, window: int = 1024, freshness: float = 30.0, max_senders: int = 4096
    ) -> None:
        if not isinstance(window, int) or not 1 <= window <= self.MAX_WINDOW:
            raise ConfigurationError(
                f"replay window must be an int in 1..{self.MAX_WINDOW}, not {window!r}"
            )
        if not freshness > 0:
            raise ConfigurationError(f"freshness must be positive seconds, not {freshness!r}")
        if not isinstance(max_senders, int) or max_senders < 1:
            raise ConfigurationError(f"max_senders must be a positive int, not {max_senders!r}")
        self.window = window
        self._mask = (1 << window) - 1
        self.freshness = float(freshness)
        self.max_senders = max_senders
        self._senders: collections.OrderedDict[str, tuple[int, _Window]] = (
            collections.OrderedDict()
        )

    def accept(self, sender: str, epoch: int, sequence: int, timestamp_ms: int, now: float
               ) -> None:
        """Record an authenticated packet, or raise if it must be refused.

        ``timestamp_ms`` is the packet's header timestamp (ms since the Unix epoch) and ``now``
        the receiver's clock (seconds since the Unix epoch). Raises :class:`ReplayError`,
        :class:`TooOldError` or :class:`StaleEpochError`; state changes only on success.
        """
        senders = self._senders
        known = senders.get(sender)
        if known is not None and epoch == known[0]:
            window = known[1]
            shift = sequence - window.top
            if shift > 0:  # the common case first: the next packet of a known run
                # A jump past the whole window forgets it outright; shifting by a 64-bit
                # amount would build an enormous integer.
                if shift < self.window:
                    window.bits = ((window.bits << shift) | 1) & self._mask
                else:
                    window.bits = 1
                window.top = sequence
                senders.move_to_end(sender)
                return
        if known is None or epoch > known[0]:
            skew = abs(timestamp_ms / 1000.0 - now)
            if skew > self.freshness:
                raise StaleEpochError(
                    f"new epoch {epoch} from {sender!r} with a timestamp {skew:.0f} s away from "
                    f"this clock (freshness window {self.freshness:.0f} s)"
                )
            self._senders[sender] = (epoch, _Window(sequence))
            self._senders.move_to_end(sender)
            if len(self._senders) > self.max_senders:
                self._senders.popitem(last=False)
            return
        if epoch < known[0]:
            raise StaleEpochError(
                f"epoch {epoch} from {sender!r} is older than its newest epoch {known[0]}"
            )
        window = known[1]
        self._senders.move_to_end(sender)
        behind = window.top - sequence
        if behind >= self.window:
            raise TooOldError(
                f"sequence {sequence} from {sender!r} is {behind} behind the newest, outside the "
                f"replay window of {self.window}"
            )
        bit = 1 << behind
        if window.bits & bit:
            raise ReplayError(f"sequence {sequence} from {sender!r} was already accepted")
        window.bits |= bit

    def forget(self, sender: str) -> None:
        """Drop what is known of ``sender`` (its next packet is judged as a new epoch)."""
        self._senders.pop(sender, None)

    def __len__(self) -> int:
        return len(self._senders)
