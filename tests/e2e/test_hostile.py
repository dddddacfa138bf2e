"""Hostile clients: requests built to crash, hang or buy the server's CPU. After each the
server must still answer, serve other clients, and return to idle with every KV block free.
Server-side time for expensive-looking requests is printed (not asserted; see the closing
notes for figures)."""
import random
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


def timed_error(call, *args):
    """Runs a call expected to fail; returns (status code, details, seconds)."""
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args)
        if not hasattr(result, "ids") and not hasattr(result, "hooks"):
            list(result)
    return info.value.code(), info.value.details(), time.perf_counter() - start


def test_huge_hook_names_are_refused_cheaply(builtin_server):
    """D2: a 1 MiB unknown hook name cost seconds of edit distance on the handler thread and
    came back whole in the status (past the client's 8 KiB metadata limit)."""
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(builtin_server.addr))
    name = "blocks.0.hook_resid_pots" + "x" * (1 << 20)
    calls = [
        (stub.RunWithCache, P.RunWithCacheRequest(prompts=[P.Prompt(text="hi")],
                                                  names_filter=[name])),
        (stub.ListHooks, P.ListHooksRequest(names_filter=[name])),
        (stub.ListHooks, P.ListHooksRequest(names_filter=["*a" * 100 + "X"] * 65)),
    ]
    for call, request in calls:
        code, details, seconds = timed_error(call, request)
        print(f"D2 {call._method.decode()}: {code.name} in {seconds * 1000:.1f} ms")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert len(details) < 1000 and "names_filter" in details
    assert_idle_and_healthy(builtin_server.addr)


def test_huge_text_is_refused_before_tokenizing(builtin_server):
    """D3: 3.9 MiB of text was tokenized in full (tens of seconds of CPU) before the length
    check, and Tokenize had no limit; meanwhile other calls waited."""
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(builtin_server.addr))
    text = "a" * (3_900_000)
    limit = lensd.Client(builtin_server.addr).model_info()["max_prompt_bytes"]
    assert 0 < limit < len(text)
    calls = [
        (stub.Generate, P.GenerateRequest(prompt=P.Prompt(text=text))),
        (stub.RunWithCache, P.RunWithCacheRequest(prompts=[P.Prompt(text="hi"),
                                                           P.Prompt(text=text)])),
        (stub.Tokenize, P.TokenizeRequest(text=text)),
    ]
    for call, request in calls:
        code, details, seconds = timed_error(call, request)
        print(f"D3 {call._method.decode()}: {code.name} in {seconds * 1000:.1f} ms")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "3900000 bytes" in details and str(limit) in details
    # Just under the limit is accepted and tokenized.
    ids = lensd.Client(builtin_server.addr).tokenize("b" * limit)
    assert len(ids) >= limit // 4
    assert_idle_and_healthy(builtin_server.addr)


def test_other_clients_are_served_during_hostile_requests(builtin_server):
    """While hostile requests arrive back to back, a well-behaved client's requests finish."""
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(builtin_server.addr))
    hostile = [
        lambda: list(stub.Generate(P.GenerateRequest(prompt=P.Prompt(text="a" * 3_900_000)))),
        lambda: stub.ListHooks(P.ListHooksRequest(names_filter=["x" * (1 << 20)])),
    ]
    stop = time.time() + 3

    def attack(fn):
        n = 0
        while time.time() < stop:
            try:
                fn()
            except grpc.RpcError:
                n += 1
        return n

    client = lensd.Client(builtin_server.addr)
    with ThreadPoolExecutor(len(hostile)) as pool:
        futures = [pool.submit(attack, fn) for fn in hostile]
        latencies = []
        while time.time() < stop:
            start = time.perf_counter()
            events = list(client.generate("hello", max_new_tokens=4, ignore_eos=True))
            latencies.append(time.perf_counter() - start)
            assert len(events) == 5
        refused = [f.result() for f in futures]
    print(f"hostile calls refused: {refused}; good generate max latency "
          f"{max(latencies) * 1000:.1f} ms over {len(latencies)} calls")
    assert all(n > 0 for n in refused)
    assert_idle_and_healthy(builtin_server.addr)


def raw_call(channel, method, payload):
    return channel.unary_unary(method, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)(payload, timeout=10)


def test_invalid_utf8_does_not_flood_the_log(server_factory):
    """D9: every request with invalid UTF-8 in a string field made libprotobuf log an ERROR
    line, before auth: unauthenticated log flooding."""
    server = server_factory("--auth-token", "s3cret")
    channel = grpc.insecure_channel(server.addr)
    bad_text = b"\x0a\x03\xff\xfe\xfd"  # TokenizeRequest.text = 3 invalid bytes
    before = len(server.log)
    codes = set()
    for _ in range(300):
        try:
            raw_call(channel, "/lensd.v1.Lensd/Tokenize", bad_text)
        except grpc.RpcError as e:
            codes.add(e.code())
    time.sleep(0.5)
    new_lines = server.log[before:]
    print(f"D9: codes {sorted(c.name for c in codes)}, {len(new_lines)} log lines for 300 calls")
    assert codes and grpc.StatusCode.OK not in codes
    assert len(new_lines) <= 5, "".join(new_lines[:10])
    assert server.proc.poll() is None


METHODS = [("/lensd.v1.Lensd/Generate", "stream"), ("/lensd.v1.Lensd/RunWithCache", "stream"),
           ("/lensd.v1.Lensd/Tokenize", "unary"), ("/lensd.v1.Lensd/Detokenize", "unary"),
           ("/lensd.v1.Lensd/GetModelInfo", "unary"), ("/lensd.v1.Lensd/ListHooks", "unary"),
           ("/lensd.v1.Lensd/PatchSweep", "stream")]


def test_random_protobuf_bytes_to_every_method(builtin_server):
    channel = grpc.insecure_channel(builtin_server.addr)
    rng = random.Random(11)
    codes = {}
    for method, kind in METHODS:
        ident = lambda b: b  # noqa: E731
        call = (channel.unary_stream if kind == "stream" else channel.unary_unary)(
            method, request_serializer=ident, response_deserializer=ident)
        for _ in range(150):
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
            try:
                result = call(payload, timeout=10)
                if kind == "stream":
                    list(result)
                codes[grpc.StatusCode.OK] = codes.get(grpc.StatusCode.OK, 0) + 1
            except grpc.RpcError as e:
                codes[e.code()] = codes.get(e.code(), 0) + 1
    print("random protobuf bytes:", {c.name: n for c, n in codes.items()})
    assert_idle_and_healthy(builtin_server.addr)


def test_oversized_fields_are_refused(builtin_server):
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(builtin_server.addr))
    requests = [
        (stub.RunWithCache, P.RunWithCacheRequest(prompts=[P.Prompt(text="x")] * 300)),
        (stub.RunWithCache, P.RunWithCacheRequest(prompts=[P.Prompt(text="x")],
                                                  names_filter=["hook_embed"] * 20000)),
        (stub.Generate, P.GenerateRequest(prompt=P.Prompt(tokens=P.TokenIds(ids=[5] * 100000)))),
        (stub.Generate, P.GenerateRequest(prompt=P.Prompt(text="x"), max_new_tokens=2 ** 31 - 1)),
        (stub.Detokenize, P.DetokenizeRequest(ids=[2 ** 31 - 1, -5])),
        (stub.RunWithCache, P.RunWithCacheRequest(
            prompts=[P.Prompt(text="x")],
            interventions=[P.Intervention(hook="hook_embed", zero=P.ZeroOp())] * 1000)),
        (stub.PatchSweep, P.PatchSweepRequest(
            clean=P.Prompt(tokens=P.TokenIds(ids=[5] * 1000)),
            corrupted=P.Prompt(tokens=P.TokenIds(ids=[6] * 1000)),
            component=P.COMPONENT_Z, metric=P.SweepMetric(kl=P.KlMetric()))),
    ]
    for call, request in requests:
        code, details, seconds = timed_error(call, request)
        print(f"oversized {call._method.decode()}: {code.name} in {seconds * 1000:.1f} ms")
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), details
        assert len(details) < 1000
    assert_idle_and_healthy(builtin_server.addr)


def test_abandoned_and_stalled_streams_free_everything(server_factory):
    server = server_factory("--stall-timeout-s", "1")
    for _ in range(30):  # streams whose channel goes away mid-flight
        channel = grpc.insecure_channel(server.addr)
        stub = lensd_pb2_grpc.LensdStub(channel)
        call = stub.Generate(P.GenerateRequest(prompt=P.Prompt(text="abandon"), max_new_tokens=200,
                                               sampling=P.SamplingParams(ignore_eos=True)))
        next(call)
        channel.close()
    for _ in range(10):  # sweeps abandoned after their header
        channel = grpc.insecure_channel(server.addr)
        call = lensd_pb2_grpc.LensdStub(channel).PatchSweep(P.PatchSweepRequest(
            clean=P.Prompt(text="abandon the sweep"), corrupted=P.Prompt(text="abandon the swept"),
            metric=P.SweepMetric(kl=P.KlMetric())))
        next(call)
        channel.close()
    # A client that never reads a large capture is cancelled after the stall timeout.
    stalled = grpc.insecure_channel(server.addr, options=[("grpc.max_receive_message_length", 1 << 20)])
    stub = lensd_pb2_grpc.LensdStub(stalled)
    call = stub.RunWithCache(P.RunWithCacheRequest(prompts=[P.Prompt(text="s" * 1000)] * 4))
    time.sleep(4)
    assert_idle_and_healthy(server.addr)
    call.cancel()
    stalled.close()


def test_crafted_model_files_fail_with_clear_errors(tmp_path):
    """D4-D7: crafted config.json / tokenizer.json / safetensors exit 1 naming file and field."""
    from conftest import GOLDEN, LENSD, run_cli
    import json
    import shutil
    cases = []
    config = json.loads((GOLDEN / "gpt2" / "config.json").read_text())
    for field, value in [("n_head", 2 ** 32), ("n_embd", 2 ** 62), ("n_layer", 1e300)]:
        d = tmp_path / f"config_{field}"
        shutil.copytree(GOLDEN / "gpt2", d)
        (d / "config.json").write_text(json.dumps({**config, field: value}))
        cases.append((d, ["config.json", field]))
    d = tmp_path / "tokenizer"
    shutil.copytree(GOLDEN / "gpt2", d)
    (d / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}}, "post_processor": '
                                      + "[" * 200000 + "]" * 200000 + "}")
    cases.append((d, ["tokenizer.json", "nested deeper than"]))
    d = tmp_path / "safetensors"
    shutil.copytree(GOLDEN / "gpt2", d)
    header = json.dumps({"wte.weight": {"dtype": "F32", "shape": [2 ** 40, 2 ** 24],
                                        "data_offsets": [0, 0]}}).encode()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    cases.append((d, ["model.safetensors", "shape too large"]))
    for model, needles in cases:
        r = run_cli(LENSD, "run", "--model", str(model), "--token-ids", "1,2", "--out",
                    str(tmp_path / "out.safetensors"), check=False)
        err = r.stderr.decode()
        assert r.returncode == 1, (model.name, r.returncode, err[-500:])  # not a signal
        for needle in needles:
            assert needle in err, (model.name, err[-500:])
