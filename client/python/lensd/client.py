"""lensd.Client: a thin, typed wrapper over the lensd.v1 gRPC API."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import pathlib
import socket
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from google.protobuf import descriptor

from lensd import sweep
try:  # the CMake build generates it beside the package; a pip install takes grpcio-health-checking's
    from lensd._grpc import health_pb2
except ImportError:
    from grpc_health.v1 import health_pb2
from lensd.errors import ERRORS, Error, Stream, translate
from lensd.cache import ActivationCache
from lensd.v1 import lensd_pb2, lensd_pb2_grpc

Prompt = Union[str, Sequence[int]]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]

_DTYPES = {
    "float32": lensd_pb2.DTYPE_FLOAT32,
    "bfloat16": lensd_pb2.DTYPE_BFLOAT16,
    "float16": lensd_pb2.DTYPE_FLOAT16,
    None: lensd_pb2.DTYPE_UNSPECIFIED,
}


@dataclasses.dataclass
class TokenEvent:
    id: int
    index: int
    text: str  # new text since the previous event (may be empty)
    text_bytes: bytes  # the same as sent (a model may emit bytes that are not UTF-8)


@dataclasses.dataclass
class GenerateDone:
    ids: List[int]
    text: str
    finish_reason: str  # "length" (max_new_tokens), "stop" (EOS / stop id) or "context" (full)
    prompt_ids: List[int]
    time_to_first_token_ms: float
    total_ms: float
    text_bytes: bytes


def _to_numpy(data: bytes, dtype: int, shape: Sequence[int]) -> np.ndarray:
    if dtype == lensd_pb2.DTYPE_FLOAT32:
        return np.frombuffer(data, dtype="<f4").reshape(shape)
    if dtype == lensd_pb2.DTYPE_FLOAT16:
        return np.frombuffer(data, dtype="<f2").reshape(shape)
    if dtype == lensd_pb2.DTYPE_BFLOAT16:  # numpy has no bfloat16: widen to float32 exactly
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype == lensd_pb2.DTYPE_INT32:
        return np.frombuffer(data, dtype="<i4").reshape(shape)
    raise ValueError(f"unknown dtype {dtype}")


PAD_ID = -1  # ActivationCache.tokens where a shorter prompt is padded


def _pad_left(arrays: List[np.ndarray], fill: float = 0) -> np.ndarray:
    """Stacks the prompts' [1, ...] arrays into [batch, ...], left-padding with `fill` each axis
    whose size differs between them: the positions (and keys), wherever the hook has them
    (after the heads for heads-first hooks)."""
    axes = [ax for ax in range(1, arrays[0].ndim) if len({a.shape[ax] for a in arrays}) > 1]
    target = [max(a.shape[ax] for a in arrays) for ax in range(arrays[0].ndim)]
    out = np.full([len(arrays)] + target[1:], fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        index = [i] + [slice(None)] * (a.ndim - 1)
        for ax in axes:
            index[ax] = slice(target[ax] - a.shape[ax], None)
        out[tuple(index)] = a[0]
    return out


# Routing hooks of mixture layers are [positions, experts] without a batch axis, as
# TransformerLens gives them: a batch is [batch · positions, ...], each prompt's rows
# left-padded to the longest.
_ROUTING = ("mlp.hook_expert_weights", "mlp.hook_expert_indices")


def _stack(name: str, arrays: List[np.ndarray], width: int, fill: float) -> np.ndarray:
    if not name.endswith(_ROUTING):
        return _pad_left(arrays, fill)
    rows = [np.concatenate([np.full((width - a.shape[0],) + a.shape[1:], fill, a.dtype), a])
            for a in arrays]
    return np.concatenate(rows)


def _saes(saes) -> List[lensd_pb2.SaeAttach]:
    """SAE names or lensd.sae(...) attachments as the request carries them."""
    return [lensd_pb2.SaeAttach(name=s) if isinstance(s, str) else s for s in saes]


def _prompt(p: Prompt) -> lensd_pb2.Prompt:
    if isinstance(p, str):
        return lensd_pb2.Prompt(text=p)
    return lensd_pb2.Prompt(tokens=lensd_pb2.TokenIds(ids=[int(t) for t in p]))


def _to_dict(message) -> dict:
    """Every field by its proto name with Python values: ints stay ints (protobuf's JSON
    mapping would turn int64 fields into strings), enums become their names."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)

        def convert(v):
            if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                return _to_dict(v)
            if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
                return field.enum_type.values_by_number[v].name
            return v

        if field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
            out[field.name] = [convert(v) for v in value]
        else:
            out[field.name] = convert(value)
    return out


# Round robin over every address the target resolves to, and retries of the idempotent RPCs
# on UNAVAILABLE; shared with lensctl.
SERVICE_CONFIG = json.loads((pathlib.Path(__file__).parent / "service_config.json").read_text())


def service_config(target: str) -> str:
    """SERVICE_CONFIG, plus, for targets of several servers, client-side health checks: a
    server that is loading or draining (health NOT_SERVING) gets no new requests."""
    config = dict(SERVICE_CONFIG)
    if target.startswith("dns:") or ("," in target and target.startswith(("ipv4:", "ipv6:"))):
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


def channel_target(addr: Union[str, Sequence[str]]) -> str:
    """A gRPC target for one address ("host:port", "dns:///name:port", any gRPC URI) or
    several ("h1:p1,h2:p2" or a list), the latter as one ipv4:/ipv6: target of their
    addresses (host names resolved once, here)."""
    addrs = [a.strip() for a in addr.split(",")] if isinstance(addr, str) else list(addr)
    if len(addrs) == 1:
        return addrs[0]
    resolved = []
    for a in addrs:
        host, sep, port = a.rpartition(":")
        if not sep or not port.isdigit() or "/" in a:
            raise ValueError(f"{a!r}: several addresses must each be host:port")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][4][0])
        resolved.append((ip.version, f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"))
    versions = {v for v, _ in resolved}
    if len(versions) != 1:
        raise ValueError(f"{addr!r}: mixes IPv4 and IPv6 addresses")
    return f"ipv{versions.pop()}:" + ",".join(a for _, a in resolved)


class Client:
    """Connects to a lensd server, or to several, balanced request by request (round robin):
    `addr` "host:port", "dns:///name:port" (every address of the name, e.g. a Kubernetes
    headless Service), "h1:p1,h2:p2" or a list of addresses; servers not SERVING are skipped.
    Idempotent RPCs are retried on UNAVAILABLE. Failed calls raise lensd.Error subclasses, one
    per status code (lensd.InvalidArgument, lensd.ResourceExhausted, ...; still grpc.RpcErrors)
    with the server's message. `wait_for_ready` (seconds) waits until a server answers SERVING
    (lensd.Unavailable after that long)."""

    def __init__(self, addr: Union[str, Sequence[str]] = "localhost:50051", *,
                 token: Optional[str] = None,
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 timeout: Optional[float] = None, wait_for_ready: Optional[float] = None):
        self._target, self._credentials = channel_target(addr), credentials
        self._channel = self._open(service_config(self._target))
        self._probe = None  # health(): a channel without health checks (they would hide the answer)
        self._stub = lensd_pb2_grpc.LensdStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._timeout = timeout
        if wait_for_ready is not None:
            self.wait_until_serving(wait_for_ready)

    def wait_until_serving(self, seconds: float) -> None:
        """Returns once a server answers SERVING; lensd.Unavailable after `seconds`."""
        deadline = time.monotonic() + seconds
        last = "no answer"
        while True:
            try:
                last = self.health()
                if last == "SERVING":
                    return
            except Error as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise ERRORS[grpc.StatusCode.UNAVAILABLE](
                    grpc.StatusCode.UNAVAILABLE,
                    f"{self._target}: not SERVING after {seconds} s (last: {last})")
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _open(self, config: str) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.service_config", config), ("grpc.enable_retries", 1)]
        if self._credentials is None:
            return grpc.insecure_channel(self._target, options=options)
        return grpc.secure_channel(self._target, self._credentials, options=options)

    def close(self) -> None:
        self._channel.close()
        if self._probe is not None:
            self._probe.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            result = method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as e:
            raise translate(e) from None
        return Stream(result) if hasattr(result, "__next__") else result

    # -- generation -------------------------------------------------------------------
    def generate(self, prompt: Prompt, max_new_tokens: int = 16, *,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None,
                 frequency_penalty: Optional[float] = None,
                 presence_penalty: Optional[float] = None, seed: Optional[int] = None,
                 stop_token_ids: Sequence[int] = (), ignore_eos: bool = False,
                 interventions: Sequence[lensd_pb2.Intervention] = (), saes: Sequence = (),
                 ) -> Iterator[Union[TokenEvent, GenerateDone]]:
        """Yields a TokenEvent per generated token, then one GenerateDone.

        Unset sampling values take the server's defaults (greedy). `interventions`
        (lensd.add, lensd.zero, ...) apply at every step, to the prompt and to every new
        token their positions select (default: all); `saes` as in run_with_cache (spliced or
        with feature edits they steer the generation)."""
        sampling = lensd_pb2.SamplingParams(stop_token_ids=list(stop_token_ids),
                                            ignore_eos=ignore_eos)
        for name, value in [("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                            ("min_p", min_p), ("repetition_penalty", repetition_penalty),
                            ("frequency_penalty", frequency_penalty),
                            ("presence_penalty", presence_penalty), ("seed", seed)]:
            if value is not None:
                setattr(sampling, name, value)
        request = lensd_pb2.GenerateRequest(prompt=_prompt(prompt), max_new_tokens=max_new_tokens,
                                            sampling=sampling, interventions=list(interventions),
                                            saes=_saes(saes))
        call = self._call(self._stub.Generate, request)
        try:
            yield from self._events(call)
        finally:  # a caller that stops iterating early cancels the request (its KV is freed)
            call.cancel()

    @staticmethod
    def _events(call):
        for event in call:
            if event.HasField("token"):
                t = event.token
                yield TokenEvent(t.id, t.index, t.text.decode("utf-8", errors="replace"), t.text)
            else:
                d = event.done
                reason = lensd_pb2.FinishReason.Name(d.finish_reason)
                yield GenerateDone(list(d.ids), d.text.decode("utf-8", errors="replace"),
                                   reason.replace("FINISH_REASON_", "").lower(),
                                   list(d.prompt_ids), d.time_to_first_token_ms, d.total_ms,
                                   d.text)

    # -- activations ------------------------------------------------------------------
    def run_with_cache(self, prompts: Union[Prompt, Sequence[Prompt]],
                       names_filter: NamesFilter = None, *,
                       position_slice: Optional[Tuple[Optional[int], Optional[int]]] = None,
                       dtype: Optional[str] = "float32", return_logits: bool = True,
                       interventions: Sequence[lensd_pb2.Intervention] = (),
                       grad=None, saes: Sequence = (), feature_top_k: int = 0,
                       ) -> Tuple[Optional[np.ndarray], ActivationCache]:
        """Like HookedTransformer.run_with_cache: returns (logits [batch, P, vocab], cache).

        `prompts`: a string, a list of token ids, or a list of those. `names_filter`: None (every
        hook), a name / glob / layer range ("blocks.0-3.hook_z"), a list of them, or a
        predicate over hook names. `position_slice`: (start, stop) over positions. `dtype`:
        "float32", "float16", "bfloat16" (widened to float32 here) or None (model dtype).
        `interventions`: lensd.zero / scale / set / add / patch / project / sae_clamp / noise;
        the cache holds each hook's value after its ops (like run_with_hooks + a cache).
        `grad`: an objective — lensd.loss(), lensd.logit_diff(answer, wrong) or
        lensd.logprob(ids) — whose gradient comes back as cache["<hook>_grad"] for every hook
        (run_with_cache(incl_bwd=True)'s names) and whose value per prompt is
        cache.objective; with interventions, through them by their gradient rules (README,
        Gradients). `saes`: names of SAEs the server loaded, or lensd.sae(name, splice=True);
        their hooks ("<hook>.hook_sae_acts_post", ...) are then selectable; `feature_top_k` > 0
        returns feature activations as "<hook>.hook_sae_acts_post.top_indices" / ".top_values"
        [batch, P, k] (lensd.dense_features makes them dense)."""
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int))
        prompt_list = [prompts] if single else list(prompts)
        request = lensd_pb2.RunWithCacheRequest(prompts=[_prompt(p) for p in prompt_list],
                                                dtype=_DTYPES[dtype],
                                                skip_logits=not return_logits,
                                                interventions=list(interventions),
                                                saes=_saes(saes),
                                                feature_top_k=feature_top_k)
        if grad is not None:
            request.objective.CopyFrom(sweep.objective(grad))
        if callable(names_filter):
            names = [h for h, _ in self.list_hooks() if names_filter(h)]
            request.names_filter.extend(names)
            request.skip_hooks = not names
        elif isinstance(names_filter, str):
            request.names_filter.append(names_filter)
        elif names_filter is not None:
            request.names_filter.extend(names_filter)
            request.skip_hooks = len(names_filter) == 0
        if position_slice is not None:
            start, stop = position_slice
            if start is not None:
                request.position_slice.start = start
            if stop is not None:
                request.position_slice.stop = stop
        logits, cache = self._collect_cache(self._call(self._stub.RunWithCache, request),
                                            len(prompt_list))
        cache.n_layers, cache.normalization = self._facts()
        return logits, cache

    @staticmethod
    def _collect_cache(stream, n_prompts: int):
        header = None
        done = None
        buffers: Dict[Tuple[str, int], bytearray] = {}
        infos: Dict[Tuple[str, int], lensd_pb2.TensorInfo] = {}
        for message in stream:
            kind = message.WhichOneof("kind")
            if kind == "header":
                header = message.header
            elif kind == "chunk":
                info = message.chunk.tensor
                key = (info.name, info.prompt_index)
                if key not in buffers:
                    buffers[key] = bytearray(info.num_bytes)
                    infos[key] = info
                data = message.chunk.data
                buffers[key][message.chunk.offset:message.chunk.offset + len(data)] = data
            elif kind == "done":
                done = message.done
        if header is None:
            raise RuntimeError("lensd: the stream carried no header")
        lengths = [len(p.ids) for p in header.prompt_ids]
        width = max(lengths)
        cache = ActivationCache()
        if done is not None and len(done.objective) > 0:
            cache.objective = np.array(done.objective, dtype=np.float64)
        cache.mask = np.zeros((n_prompts, width), dtype=bool)
        cache.tokens = np.full((n_prompts, width), PAD_ID, dtype=np.int64)
        for i, p in enumerate(header.prompt_ids):
            cache.mask[i, width - len(p.ids):] = True
            cache.tokens[i, width - len(p.ids):] = list(p.ids)
        names = []
        for t in header.manifest:
            if t.name not in names:
                names.append(t.name)
        logits = None
        for name in names:
            arrays = [_to_numpy(bytes(buffers[(name, i)]), infos[(name, i)].dtype,
                                infos[(name, i)].shape) for i in range(n_prompts)]
            scores = name.endswith("hook_attn_scores")  # gradients pad with 0
            indices = name.endswith((".top_indices", "hook_expert_indices"))
            fill = -np.inf if scores else -1 if indices else 0
            stacked = _stack(name, arrays, width, fill)
            if name == "logits":
                logits = stacked
            else:
                cache[name] = stacked
        return logits, cache

    # -- patching sweeps ---------------------------------------------------------------
    def patch_sweep(self, clean: Prompt, corrupted: Prompt, *, component: str = "resid_pre",
                    metric: lensd_pb2.SweepMetric, layers: Optional[Tuple[Optional[int], Optional[int]]] = None,
                    positions: str = "each", heads: str = "each",
                    direction: str = "denoising", method: str = "exact") -> "sweep.SweepResult":
        """Patches `component` (resid_pre, resid_mid, resid_post, attn_out, mlp_out; per head:
        z, q, k, v, pattern) of one run into the other at every layer × position (× head)
        and returns the metric grid (lensd.logit_diff / logprob / kl / logits).
        `positions`/`heads`: "each" (a cell apiece) or "all" (one cell patching all);
        `direction`: "denoising" (clean into corrupted) or "noising"; `layers`: (start, stop).
        `method`: "exact" (each cell a patched run) or "attribution" (attribution patching:
        each cell Σ (source − target) · ∂metric/∂target over the patched slice — the linear
        estimate of the metric's change — from one backward pass; logit_diff / logprob)."""
        if component not in sweep.COMPONENTS:
            raise ValueError(f"component must be one of {sorted(sweep.COMPONENTS)}")
        for name, value, allowed in (("positions", positions, ("each", "all")),
                                     ("heads", heads, ("each", "all")),
                                     ("direction", direction, ("denoising", "noising")),
                                     ("method", method, ("exact", "attribution"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        request = lensd_pb2.PatchSweepRequest(
            clean=_prompt(clean), corrupted=_prompt(corrupted), component=sweep.COMPONENTS[component],
            all_positions=positions == "all", all_heads=heads == "all",
            noising=direction == "noising", metric=metric,
            method=lensd_pb2.SWEEP_METHOD_ATTRIBUTION if method == "attribution"
            else lensd_pb2.SWEEP_METHOD_EXACT)
        if layers is not None:
            if layers[0] is not None:
                request.layers.start = layers[0]
            if layers[1] is not None:
                request.layers.stop = layers[1]
        call = self._call(self._stub.PatchSweep, request)
        try:
            return sweep.collect(call, component, self.detokenize)
        finally:
            call.cancel()

    # -- small RPCs -------------------------------------------------------------------
    def tokenize(self, text: str) -> List[int]:
        return list(self._call(self._stub.Tokenize, lensd_pb2.TokenizeRequest(text=text)).ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        response = self._call(self._stub.Detokenize, lensd_pb2.DetokenizeRequest(ids=list(ids)))
        return response.text.decode("utf-8", errors="replace")

    def _facts(self) -> Tuple[int, str]:
        """The model's layer count and normalization, asked once (they never change)."""
        if getattr(self, "_model_facts", None) is None:
            info = self.model_info()
            self._model_facts = (info["n_layers"], info["normalization"])
        return self._model_facts

    def model_info(self) -> dict:
        info = self._call(self._stub.GetModelInfo, lensd_pb2.GetModelInfoRequest())
        return _to_dict(info)

    def list_hooks(self, names_filter: Sequence[str] = ()) -> List[Tuple[str, str]]:
        response = self._call(self._stub.ListHooks,
                              lensd_pb2.ListHooksRequest(names_filter=list(names_filter)))
        return [(h.name, h.shape) for h in response.hooks]

    def health(self, service: str = "") -> str:
        """"SERVING", "NOT_SERVING", ... from grpc.health.v1 (of one of the servers, when the
        client balances over several)."""
        if self._probe is None:
            self._probe = self._open(json.dumps(SERVICE_CONFIG))
        check = self._probe.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        response = self._call(check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
