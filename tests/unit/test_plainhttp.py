"""The lean HTTP reader against a loopback socket that replays a recorded llama.cpp response."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.client.plainhttp import PlainHttpError, PlainHttpStream

SSE = (Path(__file__).parents[1] / "fixtures" / "streams" / "llamacpp_chat_length.sse").read_bytes()


def _chunked(body: bytes, piece: int) -> bytes:
    out = b""
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def _serve(response: bytes, split: int) -> Iterator[str]:
    """A one-shot server on 127.0.0.1 that reads the request and sends ``response`` in pieces."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for i in range(0, len(response), split):
                conn.sendall(response[i : i + split])
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    thread.join(5)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_body_arrives_whole_however_it_is_split(split: int) -> None:
    for url in _serve(HEAD + _chunked(SSE, 300), split):
        stream = PlainHttpStream(url, b"{}", {}, connect_s=5, read_s=5)
        assert stream.open() == 200
        assert b"".join(stream.chunks()) == SSE
        stream.close()


def test_cut_mid_body_is_an_error_naming_the_cut() -> None:
    cut = (HEAD + _chunked(SSE, 300))[:1500]
    for url in _serve(cut, 4096):
        stream = PlainHttpStream(url, b"{}", {}, connect_s=5, read_s=5)
        assert stream.open() == 200
        with pytest.raises(PlainHttpError) as info:
            list(stream.chunks())
        assert info.value.kind == "closed"
        stream.close()


def test_error_status_and_body() -> None:
    body = b'{"error":{"message":"bad"}}'
    response = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    for url in _serve(response, 4096):
        stream = PlainHttpStream(url, b"{}", {}, connect_s=5, read_s=5)
        assert stream.open() == 400
        assert stream.read_body(1000) == body
        stream.close()


def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        stream = PlainHttpStream(f"http://127.0.0.1:{port}/x", b"{}", {}, 2, 2)
        with pytest.raises(PlainHttpError) as info:
            stream.open()
    assert info.value.kind == "connect"


def test_only_plain_http() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        PlainHttpStream("https://example.invalid/x", b"", {}, 1, 1)
