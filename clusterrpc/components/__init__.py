"""Components built on clusterrpc's calls: :class:`Membership` (who is in the cluster) and
:class:`Election` (who leads it), with :func:`fenced` for the services a leader calls.

Each component has an I/O-free protocol module and a thin driver on a
:class:`~clusterrpc.Node`.
"""

from clusterrpc.components.election import Election, fenced
from clusterrpc.components.membership import Membership

__all__ = ["Election", "Membership", "fenced"]
