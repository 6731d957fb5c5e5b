"""A local lock service and two programs that share it (README, "Local services")."""

import asyncio
import tempfile
import threading

import clusterrpc
from clusterrpc import local
from clusterrpc.local.examples import Locks


def programs(local_dir: str) -> None:
    someone_waits = threading.Event()

    def on_event(event: local.LocalEvent) -> None:  # runs on the handle's event thread
        print("event:", event.payload)
        someone_waits.set()

    with local.get_cluster_handle("DEMO", local_dir=local_dir) as first, \
            local.get_cluster_handle("DEMO", local_dir=local_dir) as second:
        cookie = first.events.register(on_event)
        print("first:", first.locks.acquire("disk1", notify=cookie))
        waiter = threading.Thread(target=lambda: print("second:", second.locks.acquire("disk1")))
        waiter.start()
        someone_waits.wait(timeout=10)
        print("holder:", first.locks.holder("disk1"), "- releasing")
        first.locks.release("disk1")
        waiter.join(timeout=10)


async def main() -> None:
    with tempfile.TemporaryDirectory() as local_dir:  # default: $XDG_RUNTIME_DIR/clusterrpc
        node = clusterrpc.Node("n1", cluster="DEMO", keyring=None, insecure=True,
                               local_dir=local_dir)
        node.serve_local(Locks(), name="locks")
        async with node:
            await asyncio.to_thread(programs, local_dir)


asyncio.run(main())
