"""Components built on clusterrpc's calls: :class:`Membership` (who is in the cluster).

Each component has an I/O-free protocol module and a thin driver on a
:class:`~clusterrpc.Node`.
"""

from clusterrpc.components.membership import Membership

__all__ = ["Membership"]
