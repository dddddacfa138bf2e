"""Interventions through real servers: served results equal the offline CLIs bit for bit (on
every golden family), the JSON file format, concurrency, metrics, and every validation error
with its code and field."""
import json
import re
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import lensd
from conftest import FAMILIES, NEW_FAMILIES, model_dir, GOLDEN, LENSCTL, LENSD, Server, read_safetensors, run_cli
from lensd.v1 import lensd_pb2

P = lensd_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module", params=FAMILIES + NEW_FAMILIES)
def golden(request):
    s = Server("--model", str(model_dir(request.param)))
    ref = read_safetensors(model_dir(request.param) / "reference.safetensors")
    clean = ref["p1.input_ids"][0].tolist()
    corrupted = list(clean)
    corrupted[4] = (corrupted[4] + 17) % 1000
    corrupted[9] = (corrupted[9] + 5) % 1000
    yield request.param, s, clean, corrupted
    assert s.stop() == 0, "".join(s.log)


def ids_flag(ids):
    return ",".join(str(i) for i in ids)


def steering(d_model, seed=0):
    return np.random.default_rng(seed).standard_normal(d_model).astype(np.float32)


def json_and_python(d_model):
    """The same interventions as a --interventions file and as Python helpers."""
    v = steering(d_model)
    as_json = [
        {"hook": "blocks.1.hook_resid_pre", "op": "patch", "source": 0, "prompts": [1],
         "positions": [-1, -2, 3]},
        {"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]},
        {"hook": "blocks.0.attn.hook_pattern", "op": "scale", "factor": 0.5, "heads": [0],
         "positions": {"start": 2}, "keys": [0, 1]},
        {"hook": "blocks.1.hook_resid_post", "op": "add", "value": v.tolist(), "coeff": 0.5,
         "prompts": [1]},
        {"hook": "blocks.0.hook_mlp_out", "op": "project", "direction": v.tolist()},
        {"hook": "blocks.1.mlp.hook_post", "op": "noise", "std": 0.1, "seed": 3},
    ]
    as_python = [
        lensd.patch("blocks.1.hook_resid_pre", source=0, prompts=[1], positions=[-1, -2, 3]),
        lensd.zero("blocks.0.attn.hook_z", heads=[1]),
        lensd.scale("blocks.0.attn.hook_pattern", 0.5, heads=[0], positions=slice(2, None),
                    keys=[0, 1]),
        lensd.add("blocks.1.hook_resid_post", v, coeff=0.5, prompts=[1]),
        lensd.project("blocks.0.hook_mlp_out", v),
        lensd.noise("blocks.1.mlp.hook_post", 0.1, seed=3),
    ]
    return as_json, as_python


def test_served_interventions_equal_lensd_run(golden, tmp_path):
    family, server, clean, corrupted = golden
    with lensd.Client(server.addr) as client:
        d_model = client.model_info()["d_model"]
        as_json, as_python = json_and_python(d_model)
        logits, cache = client.run_with_cache([clean, corrupted], interventions=as_python)
        plain_logits, _ = client.run_with_cache([clean, corrupted], names_filter=[])
    assert not np.array_equal(logits[1], plain_logits[1]), "the interventions should matter"
    spec = tmp_path / "iv.json"
    spec.write_text(json.dumps(as_json))
    prompts = ["--token-ids", ids_flag(clean), "--token-ids", ids_flag(corrupted)]
    path = tmp_path / "offline.safetensors"
    run_cli(LENSD, "run", "--model", str(model_dir(family)), *prompts, "--interventions", str(spec),
            "--out", str(path))
    offline = read_safetensors(path)
    routing = ("hook_expert_weights", "hook_expert_indices")  # [batch · positions, experts]
    for j in range(2):
        np.testing.assert_array_equal(logits[j], offline[f"p{j}.logits"][0])
        for name in cache:
            got, want = cache[name][j], offline[f"p{j}.{name}"][0]
            if name.endswith(routing):
                got = cache[name][j * len(clean):(j + 1) * len(clean)]
                want = offline[f"p{j}.{name}"]
            np.testing.assert_array_equal(got, want, err_msg=f"{family} p{j} {name}")
    remote = tmp_path / "remote.safetensors"
    run_cli(LENSCTL, "--addr", server.addr, "cache", *prompts, "--interventions", str(spec),
            "--out", str(remote))
    assert remote.read_bytes() == path.read_bytes(), "lensctl cache differs from lensd run"


def test_steered_generation_equals_lensd_generate(golden, tmp_path):
    family, server, clean, _ = golden
    with lensd.Client(server.addr) as client:
        v = steering(client.model_info()["d_model"], seed=1)
        events = list(client.generate(clean, max_new_tokens=12, ignore_eos=True,
                                      interventions=[lensd.add("blocks.1.hook_resid_pre", v, 4.0)]))
        plain = list(client.generate(clean, max_new_tokens=12, ignore_eos=True))
    assert events[-1].ids != plain[-1].ids, "the steering vector should change the output"
    spec = tmp_path / "steer.json"
    np_path = tmp_path / "v.safetensors"
    header = json.dumps({"v": {"dtype": "F32", "shape": [len(v)],
                               "data_offsets": [0, 4 * len(v)]}}).encode()
    np_path.write_bytes(len(header).to_bytes(8, "little") + header + v.tobytes())
    spec.write_text(json.dumps([{"hook": "blocks.1.hook_resid_pre", "op": "add", "coeff": 4.0,
                                 "value": {"file": "v.safetensors", "tensor": "v"}}]))
    args = ["--token-ids", ids_flag(clean), "--max-new-tokens", "12", "--ignore-eos",
            "--interventions", str(spec)]
    offline = run_cli(LENSD, "generate", "--model", str(model_dir(family)), *args).stdout
    remote = run_cli(LENSCTL, "--addr", server.addr, "generate", *args).stdout
    assert remote == offline
    assert offline.decode().split("\n")[0] == " ".join(map(str, events[-1].ids))


def test_concurrent_intervened_requests_equal_their_sequential_results(builtin_server):
    client = lensd.Client(builtin_server.addr)
    d = client.model_info()["d_model"]

    def job(i):
        ivs = [lensd.add(f"blocks.{i % 4}.hook_resid_pre", steering(d, i), coeff=2.0)] if i % 3 else []
        if i % 2:
            return list(client.generate(f"prompt {i}", max_new_tokens=8, ignore_eos=True,
                                        interventions=ivs))[-1].ids
        logits, _ = client.run_with_cache([f"prompt {i}", f"prompt {i + 1}"], names_filter=[],
                                          interventions=ivs + [lensd.patch("hook_embed", 0)])
        return logits.tobytes()

    sequential = [job(i) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        concurrent = list(pool.map(job, range(12)))
    assert concurrent == sequential
    info = client.model_info()
    assert info["active_requests"] == 0 and info["kv_blocks_free"] == info["kv_blocks_total"]


def test_metrics_count_interventions_by_op(server_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_factory("--metrics-port", str(port))
    client = lensd.Client(server.addr)
    client.run_with_cache(["ab", "cd"], names_filter=[],
                          interventions=[lensd.zero("hook_embed"), lensd.zero("hook_embed"),
                                         lensd.patch("blocks.0.hook_resid_pre", 0)])
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert re.search(r'^lensd_interventions_total\{op="zero"\} 2$', body, re.M), body
    assert re.search(r'^lensd_interventions_total\{op="patch"\} 1$', body, re.M), body


def expect(code, needle, call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert needle in info.value.details(), info.value.details()


def test_every_validation_error_names_its_field(server_factory):
    neox = server_factory("--model", str(GOLDEN / "gpt_neox"), "--max-interventions", "4",
                          "--max-intervention-mib", "1")
    client = lensd.Client(neox.addr)
    info = client.model_info()
    d, heads = info["d_model"], info["n_heads"]
    two = [[5, 6, 7, 8], [9, 10, 11, 12]]

    def cache(*ivs, prompts=two):
        return lambda: client.run_with_cache(prompts, names_filter=[], interventions=list(ivs))

    def generate(*ivs):
        return lambda: list(client.generate([5, 6, 7], max_new_tokens=3, interventions=list(ivs)))

    expect(INVALID, "interventions[0].hook: unknown hook 'blocks.0.hook_resid_pots'; closest "
           "valid names: blocks.0.hook_resid_post", cache(lensd.zero("blocks.0.hook_resid_pots")))
    expect(INVALID, "interventions[0].hook: this model (gpt_neox) has no blocks.0.hook_resid_mid",
           cache(lensd.zero("blocks.0.hook_resid_mid")))
    expect(INVALID, f"interventions[1].heads[0] = {heads} is out of range",
           cache(lensd.zero("hook_embed"), lensd.zero("blocks.0.attn.hook_z", heads=[heads])))
    expect(INVALID, "interventions[0].positions[0] = 4 is out of range for prompts[0] (4 tokens)",
           cache(lensd.zero("hook_embed", positions=[4])))
    expect(INVALID, "interventions[0].keys[0] = -5 is out of range",
           cache(lensd.zero("blocks.0.attn.hook_pattern", keys=[-5])))
    expect(INVALID, "interventions[0].value of shape [3] does not broadcast",
           cache(lensd.add("hook_embed", np.ones(3))))
    expect(INVALID, "interventions[0].value has non-finite values",
           cache(lensd.set("hook_embed", np.full(d, np.inf))))
    expect(INVALID, "interventions[0].direction has zero norm",
           cache(lensd.project("hook_embed", np.zeros(d))))
    expect(INVALID, "interventions[0].source = 2 is out of range",
           cache(lensd.patch("hook_embed", 2)))
    expect(INVALID, "interventions[0].source = 0 patches prompts[0] from itself",
           cache(lensd.patch("hook_embed", 0, prompts=[0])))
    expect(INVALID, "selects 2 positions of source prompts[0] (2 tokens) but 4 of prompts[1]",
           cache(lensd.patch("hook_embed", 0), prompts=[[5, 6], [9, 10, 11, 12]]))
    expect(INVALID, "interventions[0].op = patch applies to RunWithCache only",
           generate(lensd.patch("hook_embed", 0)))
    expect(INVALID, "interventions[0] has no op", cache(P.Intervention(hook="hook_embed")))
    expect(INVALID, "interventions[0].value has 3 bytes", cache(P.Intervention(
        hook="hook_embed", set=P.SetOp(value=P.Tensor(shape=[d], data=b"abc")))))
    expect(INVALID, "interventions[0].positions = \"generated\" applies to Generate only",
           cache(lensd.zero("hook_embed", positions="generated")))
    expect(EXHAUSTED, "interventions has 5 entries; this server allows 4",
           cache(*[lensd.zero("hook_embed")] * 5))
    expect(EXHAUSTED, "interventions carry 2097152 bytes of values; this server allows 1048576",
           cache(lensd.add("hook_embed", np.zeros((1, 4, 2 ** 16), np.float32)),
                 lensd.add("hook_embed", np.zeros((1, 4, 2 ** 16), np.float32))))
    info = client.model_info()
    assert info["max_interventions"] == 4 and info["max_intervention_bytes"] == 2 ** 20
    assert info["active_requests"] == 0 and info["kv_blocks_free"] == info["kv_blocks_total"]


def test_cli_reports_bad_intervention_files(tmp_path):
    spec = tmp_path / "bad.json"
    for content, needle in [
        ('[{"hook": "hook_embed", "op": "add", "value": [1, 2], "bogus": 1}]',
         "interventions[0] has unknown field 'bogus' for op add"),
        ('[{"hook": "hook_embed", "op": "explode"}]', "interventions[0].op must be one of"),
        ('[{"hook": "hook_embed", "op": "set", "value": [[1, 2], [3]]}]',
         "interventions[0].value is not rectangular"),
        ('[{"hook": "hook_embed", "op": "zero", "positions": "later"}]',
         "interventions[0].positions = 'later' is not"),
        ('{"hook": "hook_embed"}', "interventions: must be a JSON list"),
    ]:
        spec.write_text(content)
        r = run_cli(LENSD, "run", "--token-ids", "1,2,3", "--interventions", str(spec), "--out",
                    str(tmp_path / "x.safetensors"), check=False)
        assert r.returncode == 1 and needle in r.stderr.decode(), r.stderr.decode()


def test_plain_values_equal_typed_bytes(builtin_server):
    """grpcurl users send numbers (Tensor.values); clients send bytes. Same result."""
    client = lensd.Client(builtin_server.addr)
    d = client.model_info()["d_model"]
    v = steering(d, 5)
    as_values = P.Intervention(hook="blocks.1.hook_resid_pre",
                               add=P.AddOp(value=P.Tensor(shape=[d], values=v.tolist())))
    a, _ = client.run_with_cache("values", names_filter=[], interventions=[as_values])
    b, _ = client.run_with_cache("values", names_filter=[],
                                 interventions=[lensd.add("blocks.1.hook_resid_pre", v)])
    c, _ = client.run_with_cache("values", names_filter=[],
                                 interventions=[lensd.add("blocks.1.hook_resid_pre",
                                                          v.astype(np.float16))])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)  # float16 values are rounded, as sent
