"""Codecs: the three RPC messages (call, reply, fault) as bytes, and the registry of codecs.

Built in: ``xmlrpc`` (id 1, the default), ``compact`` (id 2, the framework paper's compact XML)
and ``json`` (id 3). Plugins register under the ``clusterrpc.codecs`` entry-point group.
``spec/codecs.md`` specifies every codec's bytes.
"""

from clusterrpc.codecs.base import CallMessage, Codec, FaultMessage, ReplyMessage
from clusterrpc.codecs.registry import (
    ENTRY_POINT_GROUP,
    CodecRegistry,
    default_registry,
    get_codec,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "CallMessage",
    "Codec",
    "CodecRegistry",
    "FaultMessage",
    "ReplyMessage",
    "default_registry",
    "get_codec",
]
