"""Hostile clients: requests built to crash, hang or buy the server's CPU. After each the
server must still answer, serve other clients, and return to idle with every KV block free.
Server-side time for expensive-looking requests is printed (not asserted; see the closing
notes for figures)."""
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import lensd
from lensd.v1 import lensd_pb2, lensd_pb2_grpc

P = lensd_pb2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, raw, timeout=4):
    """Sends raw bytes to the port; returns what comes back until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        chunks = []
        try:
            s.sendall(raw)
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def assert_idle_and_healthy(addr):
    client = lensd.Client(addr)
    assert client.health() == "SERVING"
    deadline = time.time() + 30
    while time.time() < deadline:
        info = client.model_info()
        if info["active_requests"] == 0 and info["kv_blocks_free"] == info["kv_blocks_total"]:
            return
        time.sleep(0.05)
    pytest.fail(f"server did not return to idle: {info}")


CLOSE = b"Host: x\r\nConnection: close\r\n"
# (request, expected status line prefix): well-formed requests to the wrong place.
HTTP_ANSWERS = [
    (b"GET / HTTP/1.1\r\n" + CLOSE + b"\r\n", b"HTTP/1.1 404"),
    (b"GET /foo HTTP/1.1\r\n" + CLOSE + b"\r\n", b"HTTP/1.1 404"),
    (b"POST /metrics HTTP/1.1\r\n" + CLOSE + b"Content-Length: 3\r\n\r\nabc", b"HTTP/1.1 405"),
    (b"PUT /metrics HTTP/1.1\r\n" + CLOSE + b"Content-Length: 0\r\n\r\n", b"HTTP/1.1 405"),
    (b"HEAD /metrics HTTP/1.1\r\n" + CLOSE + b"\r\n", b"HTTP/1.1 200"),
]
# Malformed or oversized requests, sent all at once: any answer or none, but no crash.
HTTP_GARBAGE = [
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics?x=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n",
    b"POST /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
    b"GET /metrics HTTP/1.1\r\nRange: bytes=99999999999-1,-5,0-\r\n\r\n",
    b"\x00\xff\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    b"GARBAGE\r\n\r\n",
    b"",
]


def test_metrics_port_survives_arbitrary_http(server_factory):
    """D1: civetweb under prometheus-cpp died with SIGSEGV on anything but GET /metrics."""
    port = free_port()
    server = server_factory("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    for request, status in HTTP_ANSWERS:
        answer = http(port, request)
        assert answer.startswith(status), (request[:40], answer[:80])
    with ThreadPoolExecutor(len(HTTP_GARBAGE)) as pool:
        list(pool.map(lambda probe: http(port, probe), HTTP_GARBAGE))
    assert server.proc.poll() is None, "".join(server.log)
    body = http(port, b"GET /metrics HTTP/1.1\r\n" + CLOSE + b"\r\n", timeout=10)
    assert body.startswith(b"HTTP/1.1 200") and b"lensd_kv_blocks_total" in body
    assert_idle_and_healthy(server.addr)
