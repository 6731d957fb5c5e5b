"""Membership in the five-host lab: a real ``clusterrpc serve`` with a ``[membership]`` table on
every host (joined through h1, faster timers than the LAN defaults so the test is short), and
``clusterrpc members`` run inside the hosts. SIGKILL → dead everywhere; SIGSTOP shorter than
the suspicion timeout → nobody reports dead; a partitioned host rejoins after the heal; a host
with another key never appears in anyone's view.

Needs root, ``ip`` and ``nft``; otherwise every test skips and says what is missing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.keyring import Keyring
from tests.netns.conftest import require_lab
from tests.netns.lab import Lab, NodeProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

NAMES = ["h1", "h2", "h3", "h4", "h5"]
TIMERS = {"probe_interval": 0.5, "probe_timeout": 0.2, "gossip_interval": 0.1,
          "reconnect_interval": 1.0}
"""With 5 members: suspicion timeout between 2 s (confirmed) and 12 s (alone)."""
SUSPICION_MIN = 4 * 1.0 * TIMERS["probe_interval"]


def membership_options(lab: Lab) -> dict[str, Any]:
    return {"membership": {"seeds": [lab.host("h1").url("udp")], **TIMERS}}


@pytest.fixture(scope="module")
def lab5() -> Iterator[Lab]:
    require_lab()
    with Lab(5) as lab:
        lab.start_nodes(options=membership_options(lab))
        yield lab


@pytest.fixture
def five(lab5: Lab) -> Iterator[Lab]:
    """The lab with every member alive in every view before the test, healthy after it."""
    wait_for_views(lab5, dict.fromkeys(NAMES, "alive"), NAMES, 30.0)
    yield lab5
    lab5.clear_faults()
    for node in lab5.nodes:
        if not node.alive:
            node.restart()
        elif node.paused:
            node.resume()


def node_on(lab: Lab, host: str) -> NodeProcess:
    return next(node for node in lab.nodes if node.host.name == host)


def views(lab: Lab, hosts: list[str]) -> dict[str, dict[str, str]]:
    """``clusterrpc members --json`` on each host about its own node: name → state."""
    seen = {}
    for host in hosts:
        result = lab.run(host, [sys.executable, "-m", "clusterrpc", "members", "--timeout",
                                "2", node_on(lab, host).url("udp"), "--json"], timeout=20)
        assert result.returncode == 0, result.stderr
        seen[host] = {row["name"]: row["state"] for row in json.loads(result.stdout)}
    return seen


def wait_for_views(lab: Lab, wanted: dict[str, str], observers: list[str], limit: float
                   ) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + limit
    while True:
        seen = views(lab, observers)
        if all(view.get(name) == state for view in seen.values()
               for name, state in wanted.items()):
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.3)


def test_a_killed_host_is_dead_on_every_other(five: Lab) -> None:
    node_on(five, "h5").kill()
    others = ["h1", "h2", "h3", "h4"]
    wait_for_views(five, {"h5": "dead"}, others, 30.0)


def test_a_host_stopped_shorter_than_the_suspicion_timeout_is_never_dead(five: Lab) -> None:
    paused = node_on(five, "h4")
    others = ["h1", "h2", "h3", "h5"]
    paused.pause()
    try:
        time.sleep(SUSPICION_MIN / 2)
    finally:
        paused.resume()
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        seen = views(five, others)
        assert all(view["h4"] != "dead" for view in seen.values()), seen
        time.sleep(0.2)
    wait_for_views(five, {"h4": "alive"}, others, 10.0)


def test_a_partitioned_host_rejoins_after_the_heal(five: Lab) -> None:
    five.partition("h3")
    wait_for_views(five, {"h3": "dead"}, ["h1", "h2", "h4", "h5"], 30.0)
    five.heal("h3")
    wait_for_views(five, dict.fromkeys(NAMES, "alive"), NAMES, 30.0)


def test_a_host_with_another_key_never_appears(five: Lab, tmp_path: Path) -> None:
    impostor_keys = tmp_path / "impostor.keys"
    Keyring(cluster=five.cluster, keys=[Keyring.generate("hmac-sha256", key_id="lab1")],
            signing_key_id="lab1").save(impostor_keys)
    # A sixth node on h2 (another port), seeded with h1, signing with a key nobody trusts.
    host = five.host("h2")
    impostor = five.start_node("h2", name="intruder", keyring=impostor_keys,
                               listen=[f"udp://{host.address}:7410"],
                               options=membership_options(five))
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            seen = views(five, NAMES)
            assert all("intruder" not in view for view in seen.values()), seen
            time.sleep(0.5)
    finally:
        impostor.kill()
        five.nodes.remove(impostor)
