"""The floor of the call benchmarks: a blocking socket that sends a frame as large as
clusterrpc's call frame and reads one as large as its reply (``bench_rpc.py``,
``bench_local.py``)."""

from __future__ import annotations

import os
import socket


class EchoClient:
    """The floor: a blocking socket that sends a call-sized frame and reads the reply frame."""

    def __init__(self, url: str, call_size: int) -> None:
        if url.startswith("unix://"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(url[len("unix://"):])
        else:
            host, port = url[len("tcp://"):].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=10.0)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10.0)
        self.request = call_size.to_bytes(4, "big") + os.urandom(call_size)

    def call(self) -> bytes:
        sock = self.sock
        sock.sendall(self.request)
        data = sock.recv(262144)
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            more = sock.recv(262144)
            if not more:
                raise ConnectionError("the echo server closed the connection")
            data += more
        return data

    def close(self) -> None:
        self.sock.close()
