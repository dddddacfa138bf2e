"""Failed calls raise one lensd.Error subclass per status code with the server's message (still
grpc.RpcErrors); clients and lensctl can wait until a server is ready."""
import subprocess

import grpc
import pytest

import lensd
from conftest import LENSCTL


def test_errors_are_typed_and_carry_the_servers_message(builtin_server):
    client = lensd.Client(builtin_server.addr)
    with pytest.raises(lensd.InvalidArgument) as unary:
        client.list_hooks(["blocks.0.hook_resid_pots"])
    e = unary.value
    assert isinstance(e, lensd.Error) and isinstance(e, grpc.RpcError)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hook_resid_pots" in e.details() and "debug_error_string" not in str(e)
    assert str(e).startswith("INVALID_ARGUMENT: ")
    with pytest.raises(lensd.InvalidArgument) as streamed:  # raised while reading a stream
        client.run_with_cache("hi", names_filter=["blocks.0.hook_resid_pots"])
    assert "closest valid names" in str(streamed.value)
    with pytest.raises(lensd.InvalidArgument):
        list(client.generate("hi", max_new_tokens=-1))
    assert issubclass(lensd.ResourceExhausted, lensd.Error) and lensd.Unavailable is not lensd.Error


def test_waiting_until_a_loading_server_is_serving(server_factory):
    server = server_factory("--model", "builtin:gpt2-small", "--kv-tokens", "1024",
                            wait_ready=False)
    client = lensd.Client(server.addr, wait_for_ready=120)
    assert client.health() == "SERVING"
    r = subprocess.run([LENSCTL, "--addr", server.addr, "health", "--wait", "30"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "SERVING\n", r.stderr
    with pytest.raises(lensd.Unavailable) as nobody:  # nothing listens there
        lensd.Client("127.0.0.1:1", wait_for_ready=0.5)
    assert "not SERVING after 0.5 s" in str(nobody.value)
    r = subprocess.run([LENSCTL, "--addr", "127.0.0.1:1", "health", "--wait", "0.5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr
