"""HTTP the way a hostile or careless client sends it, over a raw socket (for the API's tests and bench)."""

from __future__ import annotations

import select
import socket


def send_chunked_until_answered(port: int, limit: int) -> tuple[int, bytes]:
    """POST a chunked body of up to ``limit`` bytes, 1 MiB a chunk, stopping as soon as the server
    answers (or closes); returns (body bytes sent, the raw response)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = b'{"model": "x", "messages": [' + b" " * ((1 << 20) - 28)
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        sent, pending = 0, memoryview(chunk)
        while sent < limit:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable or not writable:
                break
            try:
                pending = pending[sock.send(pending) :]
            except OSError:  # the server closed its side
                break
            if not pending:
                sent, pending = sent + len(piece), memoryview(chunk)
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = sock.recv(1 << 16)
            if not data:
                break
            response += data
        return sent, response
    finally:
        sock.close()
