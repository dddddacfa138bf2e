"""ActivationCache: what run_with_cache returns, with TransformerLens's shorthand and the
helpers of its ActivationCache that need no weights (stack_activation, accumulated_resid,
decompose_resid, apply_ln_to_stack), checked against TransformerLens's own
(tests/e2e/test_cache_helpers.py)."""
from typing import Optional

import numpy as np

from lensd.names import act_name


def slice_positions(array: np.ndarray, pos_slice, dim: int = -2) -> np.ndarray:
    """TransformerLens's pos_slice on axis `dim`: None keeps every position, an int one (the
    axis goes), a tuple is slice(*tuple), a slice as given, a list or array those indices."""
    if pos_slice is None:
        return array
    if isinstance(pos_slice, (int, np.integer)):
        return np.take(array, int(pos_slice), axis=dim)
    if isinstance(pos_slice, tuple):
        pos_slice = slice(*pos_slice)
    if isinstance(pos_slice, slice):
        index = [slice(None)] * array.ndim
        index[dim] = pos_slice
        return array[tuple(index)]
    return np.take(array, np.asarray(pos_slice), axis=dim)


class ActivationCache(dict):
    """hook name -> numpy array [batch, ...] (TransformerLens layout).

    Prompts of unequal length are padded on the left along every position axis: with -inf in
    hook_attn_scores (as masked scores are), 0 elsewhere (hook_pattern included). `mask`
    [batch, max_len] is True at real tokens and `tokens` holds the ids, PAD_ID (-1, never a
    token) where padded. `n_layers` and `normalization` ("LN" or "RMS", TransformerLens's
    normalization_type) are the model's, from the server.
    """

    mask: np.ndarray
    tokens: np.ndarray
    objective: Optional[np.ndarray] = None  # [batch] with run_with_cache(grad=...)
    n_layers: Optional[int] = None
    normalization: Optional[str] = None

    def __getitem__(self, key):
        """A hook name, or TransformerLens's shorthand: cache["resid_post", 0],
        cache["scale", 4, "ln1"], cache["k6"] (lensd.names.act_name)."""
        if isinstance(key, tuple):
            return super().__getitem__(act_name(*key))
        if key in self:
            return super().__getitem__(key)
        return super().__getitem__(act_name(key))

    def stack_activation(self, name: str, layer: int = -1,
                         sublayer: Optional[str] = None) -> np.ndarray:
        """[layers, batch, ...]: the activation `name` of every block before `layer` (-1 or
        None: all of them), as TransformerLens's ActivationCache.stack_activation."""
        end = self._end(layer)
        return np.stack([self[name, l, sublayer] for l in range(end)], axis=0)

    def accumulated_resid(self, layer: Optional[int] = None, incl_mid: bool = False,
                          apply_ln: bool = False, pos_slice=None, mlp_input: bool = False,
                          return_labels: bool = False):
        """[components, batch, pos, d_model]: the residual stream before each block up to
        and including block `layer`'s (None or -1: every block's, then the final
        hook_resid_post instead of a block `n_layers`), with each earlier block's
        hook_resid_mid when `incl_mid` and block `layer`'s when `mlp_input`; labels "L_pre",
        "L_mid", "final_post"; normalised by block `layer`'s cached norm scale when
        `apply_ln` (apply_ln_to_stack); positions by `pos_slice` (slice_positions).
        TransformerLens's; the final layer's apply_ln (which re-runs ln_final with its
        weights) is not available."""
        n, end = self._layers(), self._end(layer)
        if apply_ln and end == n:
            raise NotImplementedError(
                "accumulated_resid(apply_ln=True) at the final layer re-runs ln_final with its "
                "weights, which the server does not serve; use apply_ln_to_stack for the "
                "cached final scale")
        parts, labels = [], []
        for l in range(end + 1):
            if l == n:
                parts.append(self["resid_post", n - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < end) or (mlp_input and l == end):
                parts.append(self["resid_mid", l])
                labels.append(f"{l}_mid")
        return self._finish(parts, labels, end, apply_ln, pos_slice, mlp_input, return_labels)

    def decompose_resid(self, layer: Optional[int] = None, mlp_input: bool = False,
                        mode: str = "all", apply_ln: bool = False, pos_slice=None,
                        incl_embeds: bool = True, return_labels: bool = False):
        """[components, batch, pos, d_model]: what each part wrote to the residual stream
        before `layer` (None or -1: the unembedding): the embeddings (incl_embeds), then each
        block's attn_out and mlp_out ("attn" / "mlp" `mode`: one kind), and block `layer`'s
        attn_out when `mlp_input`; labels "embed", "pos_embed", "L_attn_out", "L_mlp_out";
        positions by `pos_slice`. TransformerLens's."""
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', not {mode!r}")
        end = self._end(layer)
        parts, labels = [], []
        for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
            if incl_embeds and name in self:
                parts.append(self[name])
                labels.append(label)
        for l in range(end):
            for kind in ("attn", "mlp"):
                if mode in ("all", kind):
                    parts.append(self[f"{kind}_out", l])
                    labels.append(f"{l}_{kind}_out")
        if mlp_input and mode != "mlp":
            parts.append(self["attn_out", end])
            labels.append(f"{end}_attn_out")
        return self._finish(parts, labels, end, apply_ln, pos_slice, mlp_input, return_labels)

    def _finish(self, parts, labels, layer, apply_ln, pos_slice, mlp_input, return_labels):
        stacked = np.stack([slice_positions(p, pos_slice) for p in parts], axis=0)
        if apply_ln:
            stacked = self.apply_ln_to_stack(stacked, layer, mlp_input=mlp_input,
                                             pos_slice=pos_slice)
        return (stacked, labels) if return_labels else stacked

    def apply_ln_to_stack(self, residual_stack: np.ndarray, layer: Optional[int] = None,
                          mlp_input: bool = False, pos_slice=None) -> np.ndarray:
        """`residual_stack` [components, batch, pos, d_model] as the norm before block
        `layer`'s attention (its MLP when `mlp_input`; None or -1: the final norm) would
        normalise it, with that norm's cached scale (its hook_scale must be in the cache) at
        the positions `pos_slice` selects (the stack's): centred first under LayerNorm.
        TransformerLens's, without batch_slice."""
        n = self._layers()
        end = n if layer is None or layer == -1 else layer
        scale = slice_positions(self["ln_final.hook_scale"] if end == n else
                                self[f"blocks.{end}.ln{2 if mlp_input else 1}.hook_scale"],
                                pos_slice)
        if self.normalization == "LN":
            residual_stack = residual_stack - residual_stack.mean(axis=-1, keepdims=True)
        elif self.normalization != "RMS":
            raise ValueError("the cache does not know the model's normalization (LN or RMS)")
        return residual_stack / scale

    def _layers(self) -> int:
        if self.n_layers is not None:
            return self.n_layers
        return 1 + max(int(k.split(".")[1]) for k in self if k.startswith("blocks."))

    def _end(self, layer: Optional[int]) -> int:
        return self._layers() if layer is None or layer == -1 else layer
