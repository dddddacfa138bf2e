"""Deployment: the Kubernetes manifests and compose file say what README and the issue promise
(GPUs by default, a headless Service for client-side balancing, metrics off the client-facing
Services, a PodDisruptionBudget, requests, an HPA on a metric lensd really exports), and lint
clean with yamllint."""
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT
from test_hostile import free_port

DEPLOY = ROOT / "deploy"


def documents():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/lensd.yaml").read_text()))
    return {d["kind"]: d for d in docs if d["kind"] != "Service"}, \
        [d for d in docs if d["kind"] == "Service"]


def test_yamllint():
    if shutil.which("yamllint") is None:
        pytest.skip("yamllint absent (Debian: yamllint, installed by tools/setup.sh)")
    files = [str(p) for p in sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))]
    result = subprocess.run(["yamllint", "-c", str(DEPLOY / ".yamllint"), *files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifest_fields():
    kinds, services = documents()
    pod = kinds["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--devices") + 1] == "auto"
    for section in ("requests", "limits"):
        assert int(container["resources"][section]["nvidia.com/gpu"]) >= 1
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    # A headless Service for client-side balancing and an ordinary one; neither publishes
    # the metrics port, which is scraped from the pods.
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    ordinary = [s for s in services if s["spec"].get("clusterIP") != "None"]
    assert len(headless) == 1 and len(ordinary) == 1
    for s in services:
        assert [p["port"] for p in s["spec"]["ports"]] == [50051]
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert kinds["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    pdb = kinds["PodDisruptionBudget"]["spec"]
    assert pdb["minAvailable"] >= 1
    assert pdb["selector"]["matchLabels"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= pdb["minAvailable"] + 1


def test_hpa_metric_is_exported_by_lensd(server_factory):
    kinds, _ = documents()
    metric = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    port = free_port()
    server_factory("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f"\n{metric} " in body, body[:2000]


def test_compose_uses_every_gpu_by_default():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    command = compose["services"]["lensd"]["command"]
    assert "--devices=${LENSD_DEVICES:-auto}" in command


def test_round_robin_over_three_servers_and_failover(server_factory):
    """Three servers behind one multi-address target: requests spread over all three; a killed
    server's share goes to the others (idempotent RPCs retried, new streams never sent to it)."""
    import collections
    import lensd
    from conftest import LENSCTL, run_cli
    servers = [server_factory() for _ in range(3)]
    addrs = [s.addr for s in servers]
    addrs[2] = addrs[2].replace("127.0.0.1", "localhost")  # names are resolved too
    client = lensd.Client(",".join(addrs))
    # round_robin sends only to connected servers: wait until every one has answered once.
    seen, deadline = set(), time.monotonic() + 20
    while len(seen) < 3 and time.monotonic() < deadline:
        seen.add(client.model_info()["instance"])
    served = collections.Counter(client.model_info()["instance"] for _ in range(60))
    print("served:", dict(served))
    assert len(served) == 3 and min(served.values()) >= 10, served
    for _ in range(6):
        assert [e for e in client.generate("hi", max_new_tokens=2) if isinstance(e, lensd.GenerateDone)]
    servers[0].proc.kill()
    servers[0].proc.wait()
    after = collections.Counter(client.model_info()["instance"] for _ in range(40))
    print("after a kill:", dict(after))
    assert len(after) == 2 and set(after) <= set(served), after
    for _ in range(10):
        events = list(client.generate("hi", max_new_tokens=2))
        assert isinstance(events[-1], lensd.GenerateDone)
    # lensctl: the same target forms; info is retried past the dead server.
    for _ in range(5):
        assert run_cli(LENSCTL, "--addr", ",".join(addrs), "info").stdout.startswith(b"model: ")
    out = run_cli(LENSCTL, "--addr", f"dns:///localhost:{addrs[1].split(':')[1]}", "tokenize",
                  "--prompt", "hi").stdout.decode()
    assert out.split() == ["1", "107", "108"], out
    with pytest.raises(ValueError):
        lensd.Client(["127.0.0.1:1", "[::1]:2"])


def test_devices_auto_falls_back_to_the_cpu(server_factory):
    server = server_factory()  # --devices defaults to auto
    log = "".join(server.log)
    assert "devices auto: no CUDA device" in log and "computing on the CPU" in log, log
    import lensd
    devices = lensd.Client(server.addr).model_info()["devices"]
    assert [d["name"] for d in devices] == ["cpu:0"], devices
