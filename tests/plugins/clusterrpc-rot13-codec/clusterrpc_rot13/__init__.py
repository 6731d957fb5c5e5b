"""A toy codec plugin: the xmlrpc codec's bytes, ROT13-scrambled (letters only).

It shows the whole plugin contract: subclass ``clusterrpc.codecs.Codec``, set ``name``,
``codec_id`` (128-255 for plugins) and ``media_type``, implement the five methods, and declare an
entry point in the ``clusterrpc.codecs`` group. Not for real use.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from clusterrpc.codecs import CallMessage, Codec, FaultMessage, ReplyMessage
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.errors import DecodeError
from clusterrpc.values import Value


def _rot13(data: bytes) -> bytes:
    try:
        return codecs.encode(data.decode("utf-8"), "rot13").encode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(f"rot13 body is not UTF-8: {error}") from None


class Rot13Codec(Codec):
    name = "rot13"
    codec_id = 200
    media_type = "application/x-rot13-xmlrpc"

    def _inner(self) -> XmlRpcCodec:
        return XmlRpcCodec(limits=self.limits)

    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        return _rot13(self._inner().encode_call(method, params))

    def encode_reply(self, value: Value) -> bytes:
        return _rot13(self._inner().encode_reply(value))

    def encode_fault(self, code: int, message: str) -> bytes:
        return _rot13(self._inner().encode_fault(code, message))

    def decode_call(self, data: bytes) -> CallMessage:
        return self._inner().decode_call(_rot13(data))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        return self._inner().decode_response(_rot13(data))
