"""A lensd server as a TransformerLens user holds a HookedTransformer in a notebook:

    model = lensd.RemoteModel("localhost:50051")
    tokens = model.to_tokens("When Mary and John went to the store")
    logits, cache = model.run_with_cache(tokens, names_filter="blocks.*.hook_resid_post")
    model.to_str_tokens("Hello world"), model.to_single_token(" Mary"), model.cfg.n_layers

Results are torch tensors when torch is installed (`return_type="torch"`), numpy arrays
otherwise. The model stays on the server; the tokenizer is the server's (Tokenize, Detokenize).
"""
from types import SimpleNamespace
from typing import List, Optional, Sequence, Union

import numpy as np

from lensd.client import Client

try:  # optional: pip install lensd[torch]
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

Input = Union[str, Sequence[str], Sequence[int], np.ndarray]


def _config(info: dict) -> SimpleNamespace:
    """TransformerLens's HookedTransformerConfig field names for what GetModelInfo says."""
    return SimpleNamespace(
        model_name=info["model"], original_architecture=info["architecture"],
        n_layers=info["n_layers"], d_model=info["d_model"], n_heads=info["n_heads"],
        n_key_value_heads=info["n_kv_heads"], d_head=info["d_head"], d_mlp=info["d_mlp"],
        d_vocab=info["vocab_size"], d_vocab_out=info["vocab_size"], n_ctx=info["max_positions"],
        default_prepend_bos=True, processing=info["processing"])


class RemoteModel:
    """TransformerLens's HookedTransformer surface over a lensd server: `cfg`, the tokenizer
    helpers (`to_tokens`, `to_string`, `to_str_tokens`, `to_single_token`),
    `run_with_cache`, calling for logits, `generate` and `patch_sweep`. `client` is the
    underlying lensd.Client for everything else."""

    def __init__(self, addr: Union[str, Sequence[str]] = "localhost:50051", *,
                 return_type: Optional[str] = None, **client_kwargs):
        if return_type not in (None, "torch", "numpy"):
            raise ValueError(f"return_type must be 'torch' or 'numpy', not {return_type!r}")
        if return_type == "torch" and torch is None:
            raise ImportError("return_type='torch' needs torch (pip install lensd[torch])")
        self.return_type = return_type or ("torch" if torch is not None else "numpy")
        self.client = Client(addr, **client_kwargs)
        info = self.client.model_info()
        self.cfg = _config(info)
        self.bos_token_id = info["bos_token_id"]
        self.has_tokenizer = info["has_tokenizer"]
        # Whether the server's tokenizer adds BOS itself (Llama's does, GPT-2's does not).
        self._adds_bos = self.has_tokenizer and self.bos_token_id >= 0 and \
            self.client.tokenize("")[:1] == [self.bos_token_id]

    # -- tokens ---------------------------------------------------------------------------
    def _ids(self, text: str, prepend_bos: Optional[bool]) -> List[int]:
        if not self.has_tokenizer:
            raise ValueError("the server's model has no tokenizer: pass token ids")
        ids = self.client.tokenize(text)
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        if self._adds_bos and not bos:
            return ids[1:]
        if bos and not self._adds_bos and self.bos_token_id >= 0:
            return [self.bos_token_id] + ids
        return ids

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None):
        """[batch, pos] token ids; several strings are right-padded with the BOS id (or 0),
        as TransformerLens pads (pass the strings themselves to run_with_cache for a padding
        mask instead)."""
        rows = [self._ids(t, prepend_bos) for t in ([input] if isinstance(input, str) else input)]
        width = max(len(r) for r in rows)
        pad = max(self.bos_token_id, 0)
        out = np.array([r + [pad] * (width - len(r)) for r in rows], dtype=np.int64)
        return self._out(out)

    def to_string(self, tokens) -> Union[str, List[str]]:
        """Text of a 1-D token sequence, or a list of texts for a 2-D batch."""
        array = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens)
        if array.ndim == 2:
            return [self.client.detokenize(row.tolist()) for row in array]
        return self.client.detokenize(array.tolist())

    def to_str_tokens(self, input: Union[str, Sequence[int], np.ndarray],
                      prepend_bos: Optional[bool] = None) -> List[str]:
        """Each token as text: of a string (tokenized as to_tokens does) or of token ids."""
        ids = self._ids(input, prepend_bos) if isinstance(input, str) else \
            np.asarray(input.cpu() if hasattr(input, "cpu") else input).reshape(-1).tolist()
        return [self.client.detokenize([i]) for i in ids]

    def to_single_token(self, string: str) -> int:
        """The id of `string` when it is exactly one token (without BOS); ValueError if not."""
        ids = self._ids(string, prepend_bos=False)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one: {ids}")
        return ids[0]

    # -- running --------------------------------------------------------------------------
    def _prompts(self, input: Input, prepend_bos: Optional[bool]) -> list:
        if isinstance(input, str):
            return [self._ids(input, prepend_bos)]
        if hasattr(input, "cpu"):
            input = input.cpu().numpy()
        if isinstance(input, np.ndarray) or (len(input) > 0 and not isinstance(input[0], str)):
            array = np.asarray(input)
            return [row.tolist() for row in (array[None] if array.ndim == 1 else array)]
        return [self._ids(t, prepend_bos) for t in input]

    def _out(self, value):
        if self.return_type == "torch" and isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        return value

    def run_with_cache(self, input: Input, names_filter=None, *,
                       prepend_bos: Optional[bool] = None, **kwargs):
        """(logits [batch, pos, d_vocab], ActivationCache) as Client.run_with_cache gives
        them (ragged prompts left-padded, `cache.mask`), its keyword arguments passed on; the
        tensors converted to the return type."""
        logits, cache = self.client.run_with_cache(self._prompts(input, prepend_bos),
                                                   names_filter, **kwargs)
        for name in list(cache):
            cache[name] = self._out(cache[name])
        return self._out(logits), cache

    def __call__(self, input: Input, *, prepend_bos: Optional[bool] = None, **kwargs):
        """The logits [batch, pos, d_vocab], like HookedTransformer's forward."""
        return self.run_with_cache(input, [], prepend_bos=prepend_bos, **kwargs)[0]

    def generate(self, input: Union[str, Sequence[int]], max_new_tokens: int = 10, *,
                 prepend_bos: Optional[bool] = None, **kwargs):
        """Generated continuation: the prompt's text plus the new text for a string (as
        TransformerLens returns), else the new token ids; Client.generate's sampling keywords."""
        ids = self._prompts(input, prepend_bos)
        if len(ids) != 1:
            raise ValueError("generate takes one prompt")
        *_, done = self.client.generate(ids[0], max_new_tokens, **kwargs)
        return input + done.text if isinstance(input, str) else list(done.ids)

    def patch_sweep(self, clean: Input, corrupted: Input, **kwargs):
        """Client.patch_sweep on two prompts given as strings or ids."""
        a, b = self._prompts(clean, None), self._prompts(corrupted, None)
        if len(a) != 1 or len(b) != 1:
            raise ValueError("patch_sweep takes one clean and one corrupted prompt")
        return self.client.patch_sweep(a[0], b[0], **kwargs)
