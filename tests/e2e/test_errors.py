"""Every bad input gets its gRPC code and a message that says what is wrong; limits hold."""
import subprocess
import time

import grpc
import pytest

import lensd
from conftest import LENSCTL, run_cli
from lensd.v1 import lensd_pb2, lensd_pb2_grpc

P = lensd_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def tokens(ids):
    return P.Prompt(tokens=P.TokenIds(ids=ids))


def expect(code, needle, call, *args):
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args)
        if not hasattr(result, "ids") and not hasattr(result, "hooks"):
            list(result)  # streams report errors while iterating
    assert info.value.code() == code, info.value.details()
    assert needle in info.value.details(), info.value.details()


@pytest.fixture(scope="module")
def stub(builtin_server):
    return lensd_pb2_grpc.LensdStub(grpc.insecure_channel(builtin_server.addr))


def test_bad_generate_fields(stub):
    gen = stub.Generate
    expect(INVALID, "prompt is empty", gen, P.GenerateRequest())
    expect(INVALID, "prompt has no tokens", gen, P.GenerateRequest(prompt=tokens([])))
    expect(INVALID, "ids[1] = 300 is outside the vocabulary [0, 259)", gen,
           P.GenerateRequest(prompt=tokens([1, 300])))
    expect(INVALID, "sampling.top_p = 0 is invalid: must be in (0, 1]", gen,
           P.GenerateRequest(prompt=tokens([1, 5]), sampling=P.SamplingParams(top_p=0)))
    expect(INVALID, "sampling.top_p = 1.5", gen,
           P.GenerateRequest(prompt=tokens([1, 5]), sampling=P.SamplingParams(top_p=1.5)))
    expect(INVALID, "sampling.temperature = -0.5", gen,
           P.GenerateRequest(prompt=tokens([1, 5]), sampling=P.SamplingParams(temperature=-0.5)))
    expect(INVALID, "max_new_tokens = 0", gen,
           P.GenerateRequest(prompt=tokens([1, 5]), max_new_tokens=0))
    expect(INVALID, "max_new_tokens = 5000 is invalid: must be in [1, 4096]", gen,
           P.GenerateRequest(prompt=tokens([1, 5]), max_new_tokens=5000))
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, "has 3000 tokens; this server accepts at most 2048",
           gen, P.GenerateRequest(prompt=tokens([5] * 3000)))


def test_bad_capture_fields(stub):
    run = stub.RunWithCache
    expect(INVALID, "prompts is empty", run, P.RunWithCacheRequest())
    expect(INVALID, "prompts[1].tokens.ids[0] = 999", run,
           P.RunWithCacheRequest(prompts=[tokens([1]), tokens([999])]))
    expect(INVALID, "unknown hook 'blocks.0.hook_resid_psot'; closest valid names: "
           "blocks.0.hook_resid_post", run,
           P.RunWithCacheRequest(prompts=[tokens([1, 2])], names_filter=["blocks.0.hook_resid_psot"]))
    expect(INVALID, "blocks.9", run,
           P.RunWithCacheRequest(prompts=[tokens([1, 2])], names_filter=["blocks.9.hook_resid_post"]))
    expect(INVALID, "selects no position", run,
           P.RunWithCacheRequest(prompts=[tokens([1, 2])],
                                 position_slice=P.PositionSlice(start=2)))
    expect(INVALID, "dtype = DTYPE_INT32", run,
           P.RunWithCacheRequest(prompts=[tokens([1, 2])], dtype=P.DTYPE_INT32))
    expect(INVALID, "ids[0] = -4", stub.Detokenize, P.DetokenizeRequest(ids=[-4]))
    expect(INVALID, "unknown hook", stub.ListHooks, P.ListHooksRequest(names_filter=["nope"]))


def test_capture_budget_is_checked_before_running(server_factory):
    server = server_factory("--max-capture-mib", "1")
    client = lensd.Client(server.addr)
    with pytest.raises(grpc.RpcError) as info:
        client.run_with_cache(list(range(1, 200)))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this server allows 1048576 per request" in info.value.details()
    logits, cache = client.run_with_cache(list(range(1, 200)), names_filter="hook_embed",
                                          return_logits=False)
    assert logits is None and cache["hook_embed"].shape == (1, 199, 128)


def test_full_queue_is_unavailable(server_factory):
    server = server_factory("--max-queue", "2")
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(server.addr))
    long = P.GenerateRequest(prompt=tokens([1, 5]), max_new_tokens=2000,
                             sampling=P.SamplingParams(ignore_eos=True))
    calls = [stub.Generate(long), stub.Generate(long)]
    for c in calls:
        next(c)  # both accepted and running
    expect(grpc.StatusCode.UNAVAILABLE, "at capacity (2 requests in flight)", stub.Generate, long)
    for c in calls:
        c.cancel()


def test_client_that_stops_reading_is_cancelled(server_factory):
    server = server_factory("--stall-timeout-s", "1")
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(server.addr))
    # 4 layers x [1, 4, 1500, 1500] float32 patterns = 144 MB, far beyond flow-control windows.
    call = stub.RunWithCache(P.RunWithCacheRequest(prompts=[tokens([7] * 1500)],
                                                   names_filter=["blocks.*.attn.hook_pattern"]))
    next(call)  # the header; then stop reading
    deadline = time.time() + 30
    while time.time() < deadline and not any("stopped reading" in line for line in server.log):
        time.sleep(0.1)
    assert any("stopped reading" in line for line in server.log), "".join(server.log)
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.CANCELLED
    client = lensd.Client(server.addr)
    assert client.model_info()["active_requests"] == 0
    assert client.health() == "SERVING"


def test_auth_token(server_factory):
    server = server_factory("--auth-token", "s3cret")
    with pytest.raises(grpc.RpcError) as info:
        lensd.Client(server.addr).tokenize("hi")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert lensd.Client(server.addr, token="s3cret").tokenize("hi") == [1, 107, 108]
    r = run_cli(LENSCTL, "--addr", server.addr, "--auth-token", "wrong", "info", check=False)
    assert r.returncode == 1 and b"error: UNAUTHENTICATED:" in r.stderr
    # Prefixes, extensions, other case and other schemes fail the (constant-time) compare.
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(server.addr))
    for value in ["Bearer s3cre", "Bearer s3cretX", "bearer s3cret", "Basic s3cret", "",
                  "Bearer " + "s" * 1000]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Tokenize(P.TokenizeRequest(text="hi"), metadata=[("authorization", value)])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, value[:20]
    # Probes need no token (health is open by design; reflection too, see README "Auth").
    assert lensd.Client(server.addr).health() == "SERVING"


def test_lensctl_reports_status_name_and_message(builtin_server):
    r = run_cli(LENSCTL, "--addr", builtin_server.addr, "cache", "--token-ids", "1,2",
                "--hooks", "blocks.0.hook_rezid_pre", "--out", "/dev/null", check=False)
    assert r.returncode == 1
    assert r.stderr.decode().startswith("error: INVALID_ARGUMENT: names_filter: unknown hook")
    r = run_cli(LENSCTL, "--addr", "127.0.0.1:1", "--timeout-s", "2", "health", check=False)
    assert r.returncode == 1 and b"error: UNAVAILABLE" in r.stderr
