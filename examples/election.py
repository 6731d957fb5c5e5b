"""A service, a node serving it, and two clients: the README's example.

Run it after making a keyring:  clusterrpc keys new --cluster DEMO cluster.keys
"""

import asyncio

from clusterrpc import Keyring, Node, connect, oneway, remote


class Election:
    @remote
    def status(self) -> dict:
        return {"term": 3, "leader": "n1"}

    @oneway
    def vote(self, term: int, candidate: str) -> None:
        print(f"vote for {candidate} in term {term}")


async def main() -> None:
    keyring = Keyring.load("cluster.keys")
    node = Node("n1", cluster="DEMO", keyring=keyring, listen=["tcp://127.0.0.1:7400"])
    node.serve(Election(), name="election")
    async with node:  # serves until the block ends, then drains and closes
        peer = node.peer("tcp://127.0.0.1:7400")  # node to node (to itself, here)
        print(await peer.election.status())
        await peer.oneway.election.vote(4, "n1")  # one-way: no reply packet at all

        def admin_tool() -> None:  # a blocking client, as scripts and admin tools use
            with connect("tcp://127.0.0.1:7400", keyring=keyring) as n1:
                print(n1.system.listMethods())

        await asyncio.to_thread(admin_tool)


asyncio.run(main())
