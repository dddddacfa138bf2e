"""Health, reflection (what grpcurl relies on), the small RPCs, metrics and graceful drain."""
import re
import signal
import time
import urllib.request
import socket
import subprocess

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import lensd
from lensd._grpc import reflection_pb2
from lensd.v1 import lensd_pb2, lensd_pb2_grpc

from conftest import LENSD, run_cli


def test_not_serving_until_loaded_then_serving(server_factory):
    server = server_factory("--model", "builtin:gpt2-small", "--kv-tokens", "1024",
                            wait_ready=False)
    client = lensd.Client(server.addr)
    assert client.health() == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as info:
        client.tokenize("hi")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "still loading" in info.value.details()
    server.wait_ready()
    assert client.health() == "SERVING"
    assert client.model_info()["d_model"] == 768


def reflection_request(channel, version="v1alpha", **kwargs):
    # v1 and v1alpha messages are the same on the wire (only the package differs), so the
    # v1alpha classes serve both.
    stream = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return next(stream(iter([reflection_pb2.ServerReflectionRequest(**kwargs)])))


def test_reflection_lists_and_calls_every_rpc(builtin_server):
    """Does what grpcurl does: discover the service by reflection, build messages from the
    served descriptors alone, and call each method."""
    channel = grpc.insecure_channel(builtin_server.addr)
    services = reflection_request(channel, list_services="")
    names = {s.name for s in services.list_services_response.service}
    assert {"lensd.v1.Lensd", "grpc.health.v1.Health"} <= names
    files = reflection_request(channel, file_containing_symbol="lensd.v1.Lensd")
    pool = descriptor_pool.DescriptorPool()
    for raw in files.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    service = pool.FindServiceByName("lensd.v1.Lensd")
    requests = {
        "Generate": {"prompt": {"text": "hi"}, "max_new_tokens": 3},
        "RunWithCache": {"prompts": [{"text": "hi"}], "names_filter": ["hook_embed"]},
        "Tokenize": {"text": "hi"},
        "Detokenize": {"ids": [107, 108]},
        "GetModelInfo": {},
        "ListHooks": {"names_filter": ["blocks.0.*"]},
        "PatchSweep": {"clean": {"text": "ab"}, "corrupted": {"text": "cb"}, "component": "COMPONENT_Z",
                       "layers": {"stop": 1}, "metric": {"logit_diff": {"answer_ids": [98],
                                                                        "wrong_ids": [99]}}},
    }
    assert {m.name for m in service.methods} == set(requests)
    from google.protobuf import json_format
    for method in service.methods:
        req_cls = message_factory.GetMessageClass(method.input_type) \
            if hasattr(message_factory, "GetMessageClass") \
            else message_factory.MessageFactory(pool).GetPrototype(method.input_type)
        resp_cls = message_factory.GetMessageClass(method.output_type) \
            if hasattr(message_factory, "GetMessageClass") \
            else message_factory.MessageFactory(pool).GetPrototype(method.output_type)
        request = json_format.ParseDict(requests[method.name], req_cls())
        path = f"/lensd.v1.Lensd/{method.name}"
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        call = kind(path, request_serializer=req_cls.SerializeToString,
                    response_deserializer=resp_cls.FromString)
        responses = list(call(request)) if method.server_streaming else [call(request)]
        assert responses, method.name
        if method.name == "Tokenize":
            assert list(responses[0].ids) == [1, 107, 108]
        if method.name == "Generate":
            assert responses[-1].done.usage.completion_tokens == 3
        if method.name == "PatchSweep":
            assert responses[-1].done.cells == responses[0].header.cells == len(responses) - 2


def test_reflection_v1_as_current_grpcurl_asks(builtin_server):
    channel = grpc.insecure_channel(builtin_server.addr)
    services = reflection_request(channel, "v1", list_services="")
    names = {s.name for s in services.list_services_response.service}
    assert {"lensd.v1.Lensd", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = reflection_request(channel, "v1", file_containing_symbol="lensd.v1.Lensd")
    pool = descriptor_pool.DescriptorPool()
    for raw in files.file_descriptor_response.file_descriptor_proto:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
    methods = {m.name for m in pool.FindServiceByName("lensd.v1.Lensd").methods}
    assert {"Generate", "RunWithCache", "PatchSweep"} <= methods
    by_name = reflection_request(channel, "v1", file_by_filename="lensd/v1/lensd.proto")
    assert by_name.file_descriptor_response.file_descriptor_proto[0] == \
        files.file_descriptor_response.file_descriptor_proto[0]
    missing = reflection_request(channel, "v1", file_containing_symbol="lensd.v1.Nope")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "lensd.v1.Nope" in missing.error_response.error_message
    assert lensd.Client(builtin_server.addr).health() == "SERVING"


def test_generation_stopped_by_the_context_says_so(builtin_server):
    """finish_reason "context", distinct from "length" (max_new_tokens), when the sequence fills
    the model's context; the same tokens as offline generation."""
    client = lensd.Client(builtin_server.addr)
    context = client.model_info()["max_positions"]
    prompt = [65] * (context - 3)
    done = list(client.generate(prompt, max_new_tokens=10, ignore_eos=True))[-1]
    assert done.finish_reason == "context" and len(done.ids) == 3
    assert list(client.generate([65, 66], max_new_tokens=2, ignore_eos=True))[-1].finish_reason \
        == "length"
    offline = run_cli(LENSD, "generate", "--token-ids", ",".join(map(str, prompt)),
                      "--max-new-tokens", "10", "--ignore-eos")
    assert offline.stdout.decode().splitlines()[0].split() == [str(i) for i in done.ids]


def test_batched_results_pad_with_masked_scores_and_a_pad_id(builtin_server):
    """Shorter prompts are left-padded: scores -inf (as masked entries are), pattern 0, tokens
    PAD_ID (-1, never a real id); the real part equals the prompt run alone."""
    client = lensd.Client(builtin_server.addr)
    hooks = ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "hook_embed"]
    _, batch = client.run_with_cache([[5, 6], [5, 6, 7, 8, 9]], names_filter=hooks)
    _, alone = client.run_with_cache([5, 6], names_filter=hooks)
    scores = batch["blocks.0.attn.hook_attn_scores"][0]  # [H, 5, 5], 3 padded rows and columns
    assert np.all(scores[:, :3, :] == -np.inf) and np.all(scores[:, :, :3] == -np.inf)
    assert np.array_equal(scores[:, 3:, 3:], alone["blocks.0.attn.hook_attn_scores"][0])
    pattern = batch["blocks.0.attn.hook_pattern"][0]
    assert np.all(pattern[:, :3, :] == 0) and np.all(pattern[:, :, :3] == 0)
    assert not np.isnan(pattern).any()
    assert lensd.PAD_ID == -1 and list(batch.tokens[0]) == [-1, -1, -1, 5, 6]
    assert list(batch.mask[0]) == [False, False, False, True, True]
    assert np.all(batch["hook_embed"][0, :3] == 0)


def test_small_rpcs(builtin_server):
    client = lensd.Client(builtin_server.addr)
    ids = client.tokenize("héllo")
    assert ids[0] == 1 and client.detokenize(ids) == "héllo"
    info = client.model_info()
    assert info["architecture"] == "llama" and info["n_layers"] == 4
    assert info["devices"][0]["name"] == "cpu:0"
    hooks = dict(client.list_hooks())
    assert hooks["blocks.0.attn.hook_pattern"] == "[1, 4, P, P]"
    assert len(info["hooks"]) == len(hooks)
    assert [h for h, _ in client.list_hooks(["blocks.1-2.hook_resid_post"])] == \
        ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint(server_factory):
    port = free_port()
    server = server_factory("--metrics-port", str(port))
    client = lensd.Client(server.addr)
    list(client.generate("hi", max_new_tokens=5, ignore_eos=True))
    client.run_with_cache([1, 2, 3], "hook_embed", grad=lensd.loss())
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert re.search(r"^lensd_kv_blocks_total \d+", body, re.M)
    assert float(re.search(r"^lensd_generated_tokens_total (\S+)", body, re.M).group(1)) >= 5
    assert float(re.search(r"^lensd_gradient_requests_total (\S+)", body, re.M).group(1)) == 1
    assert float(re.search(r"^lensd_gradient_tokens_total (\S+)", body, re.M).group(1)) == 3


def test_a_taken_port_is_an_error_before_loading(server_factory):
    """gRPC and cpp-httplib set SO_REUSEPORT by default, with which a second server would start on
    a taken port and silently answer half of the first one's clients."""
    metrics = free_port()
    first = server_factory("--metrics-port", str(metrics))
    port = int(first.addr.rsplit(":", 1)[1])
    for flags, taken in ((["--port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
                         (["--port", "0", "--metrics-port", str(metrics)],
                          f"cannot serve metrics on 127.0.0.1:{metrics}")):
        r = subprocess.run([LENSD, "serve", "--host", "127.0.0.1", "--model",
                            "builtin:gpt2-small", *flags], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1, r.stderr
        assert f"{taken}: address already in use" in r.stderr, r.stderr
        assert "loading" not in r.stderr.lower(), r.stderr  # refused before the model loads
    # Every answer still comes from the first server (the built-in model: d 128, not 768).
    assert {lensd.Client(first.addr).model_info()["d_model"] for _ in range(8)} == {128}


def test_sigterm_drains_accepted_requests(server_factory):
    server = server_factory()
    stub = lensd_pb2_grpc.LensdStub(grpc.insecure_channel(server.addr))
    call = stub.Generate(lensd_pb2.GenerateRequest(
        prompt=lensd_pb2.Prompt(text="drain me"), max_new_tokens=300,
        sampling=lensd_pb2.SamplingParams(ignore_eos=True)))
    first = next(call)
    assert first.token.index == 0
    server.proc.send_signal(signal.SIGTERM)
    client = lensd.Client(server.addr)
    deadline = time.time() + 10
    while client.health() != "NOT_SERVING" and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as info:
        client.tokenize("late")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in info.value.details()
    rest = list(call)
    assert rest[-1].done.usage.completion_tokens == 300
    assert len(rest) == 300  # 299 more tokens + done
    assert server.proc.wait(30) == 0


def test_prefix_caching_serves_shared_prompts_from_cache(server_factory):
    prompt = "You are a helpful assistant. Answer briefly and politely. " * 3
    results = {}
    for flag in ("true", "false"):
        server = server_factory("--prefix-caching", flag)
        client = lensd.Client(server.addr)
        outs = [list(client.generate(prompt + q, max_new_tokens=8, ignore_eos=True))[-1].ids
                for q in ("Why?", "How?", "Why?")]
        info = client.model_info()
        results[flag] = outs
        if flag == "true":
            assert info["prefix_hit_tokens"] >= 2 * 16 * (len(prompt) // 16 - 1)
            assert info["kv_blocks_cached"] > 0
        else:
            assert info["prefix_hit_tokens"] == 0 and info["kv_blocks_cached"] == 0
        assert info["kv_blocks_free"] == info["kv_blocks_total"]
    assert results["true"] == results["false"]
