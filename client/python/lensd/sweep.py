"""Activation-patching sweeps (the PatchSweep RPC) for the Python client:

    result = client.patch_sweep(clean, corrupted, component="resid_pre",
                                metric=lensd.logit_diff(answer_id, wrong_id))
    result.grid            # numpy [layers, positions] (per-head components: [layers, positions, heads])
    result.normalized()    # (grid − corrupted) / (clean − corrupted), as in the IOI literature
    result.plot("sweep.png")
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from lensd.interventions import tensor
from lensd.v1 import lensd_pb2

COMPONENTS = {
    "resid_pre": lensd_pb2.COMPONENT_RESID_PRE, "resid_mid": lensd_pb2.COMPONENT_RESID_MID,
    "resid_post": lensd_pb2.COMPONENT_RESID_POST, "attn_out": lensd_pb2.COMPONENT_ATTN_OUT,
    "mlp_out": lensd_pb2.COMPONENT_MLP_OUT, "z": lensd_pb2.COMPONENT_Z, "q": lensd_pb2.COMPONENT_Q,
    "k": lensd_pb2.COMPONENT_K, "v": lensd_pb2.COMPONENT_V, "pattern": lensd_pb2.COMPONENT_PATTERN,
}


def _ids(v) -> List[int]:
    return [int(v)] if isinstance(v, (int, np.integer)) else [int(x) for x in v]


def logit_diff(answer, wrong, positions: Sequence[int] = ()) -> lensd_pb2.SweepMetric:
    """Mean logit of `answer` id(s) minus mean logit of `wrong` id(s) (at the last position)."""
    return lensd_pb2.SweepMetric(
        logit_diff=lensd_pb2.LogitDiffMetric(answer_ids=_ids(answer), wrong_ids=_ids(wrong)),
        positions=list(positions))


def logprob(ids, positions: Sequence[int] = ()) -> lensd_pb2.SweepMetric:
    """log of the total probability of `ids`."""
    return lensd_pb2.SweepMetric(logprob=lensd_pb2.LogProbMetric(ids=_ids(ids)),
                                 positions=list(positions))


def kl(positions: Sequence[int] = ()) -> lensd_pb2.SweepMetric:
    """KL(unpatched target run ‖ patched run) of the next-token distributions."""
    return lensd_pb2.SweepMetric(kl=lensd_pb2.KlMetric(), positions=list(positions))


def logits(positions: Sequence[int] = ()) -> lensd_pb2.SweepMetric:
    """The patched logits themselves (result.logits), bounded by the server's capture budget."""
    return lensd_pb2.SweepMetric(logits=lensd_pb2.LogitsMetric(), positions=list(positions))


def loss() -> lensd_pb2.Objective:
    """Gradients' objective: the mean next-token cross-entropy (TransformerLens's loss)."""
    return lensd_pb2.Objective(loss=lensd_pb2.LossObjective())


def hook_dot(hook: str, direction, positions: Sequence[int] = ()) -> lensd_pb2.Objective:
    """Gradients' objective ⟨value of `hook`, direction⟩ per position (flattened, e.g. H·dh for
    hook_z), averaged over `positions` (default: the last): a probe or a feature direction."""
    return lensd_pb2.Objective(
        hook_dot=lensd_pb2.HookDotObjective(hook=hook, direction=tensor(np.ravel(direction))),
        positions=list(positions))


def objective(metric) -> lensd_pb2.Objective:
    """An Objective from lensd.loss() or lensd.hook_dot(...), or from the sweep metrics
    logit_diff / logprob."""
    if isinstance(metric, lensd_pb2.Objective):
        return metric
    kind = metric.WhichOneof("kind") if isinstance(metric, lensd_pb2.SweepMetric) else None
    if kind == "logit_diff":
        return lensd_pb2.Objective(logit_diff=metric.logit_diff, positions=list(metric.positions))
    if kind == "logprob":
        return lensd_pb2.Objective(logprob=metric.logprob, positions=list(metric.positions))
    raise ValueError("grad must be lensd.loss(), lensd.logit_diff(...), lensd.logprob(...) or "
                     "lensd.hook_dot(...)")


@dataclasses.dataclass
class SweepResult:
    grid: np.ndarray               # [layers, positions(, heads)]; positions axis 1 when "all"
    layers: List[int]
    positions: List[int]           # empty: every position patched at once
    heads: List[int]               # empty: every head at once, or not a per-head component
    clean_tokens: List[int]
    corrupted_tokens: List[int]
    clean_metric: float
    corrupted_metric: float
    component: str
    labels: List[str]              # per position: the token text (client.detokenize) or id
    logits: Optional[np.ndarray] = None  # logits metric: grid shape + [metric positions, vocab]
    total_ms: float = 0.0
    prompt_tokens_computed: int = 0
    prompt_tokens_cached: int = 0

    def normalized(self) -> np.ndarray:
        """(grid − corrupted) / (clean − corrupted): 1 = fully restored, 0 = no effect."""
        span = self.clean_metric - self.corrupted_metric
        if span == 0:
            raise ZeroDivisionError("the clean and corrupted runs score the same")
        return (self.grid - self.corrupted_metric) / span

    def plot(self, path: Optional[str] = None, normalized: bool = True):
        """A labelled heatmap (layers × positions; per-head grids: layers × heads, positions
        summed) through matplotlib; saved to `path` when given. Returns the figure."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:  # an optional dependency
            raise ImportError("plot() needs matplotlib (Debian: apt install python3-matplotlib)") from e
        grid = self.normalized() if normalized else self.grid
        if grid.ndim == 3:
            grid = grid.sum(axis=1)
            xlabels, xname = [str(h) for h in self.heads], "head"
        else:
            xlabels = self.labels if self.positions else ["all"]
            xname = "position"
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(xlabels) + 2), max(3, 0.35 * len(self.layers) + 2)))
        image = ax.imshow(grid, cmap="RdBu", vmin=-np.abs(grid).max(), vmax=np.abs(grid).max(),
                          aspect="auto")
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=90)
        ax.set_yticks(range(len(self.layers)), [str(l) for l in self.layers])
        ax.set_xlabel(xname)
        ax.set_ylabel("layer")
        ax.set_title(f"patching {self.component}" + (" (normalized)" if normalized else ""))
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig


def collect(stream, component: str, detokenize) -> SweepResult:
    header = None
    cells = []
    done = None
    for message in stream:
        kind = message.WhichOneof("kind")
        if kind == "header":
            header = message.header
        elif kind == "cell":
            cells.append(message.cell)
        else:
            done = message.done
    if header is None or done is None:
        raise RuntimeError("lensd: the sweep stream ended early")
    shape = [len(header.layers), max(1, len(header.positions))] + ([len(header.heads)] if header.heads else [])
    grid = np.zeros(shape)
    flat = grid.reshape(-1)
    for c in cells:
        flat[c.index] = c.value
    result_logits = None
    if cells and cells[0].logits:
        n = len(cells[0].logits)
        result_logits = np.zeros((len(flat), n), dtype=np.float32)
        for c in cells:
            result_logits[c.index] = np.asarray(c.logits, dtype=np.float32)
    corrupted = list(header.corrupted_ids.ids)
    try:
        labels = [detokenize([t]) for t in corrupted]
    except Exception:  # no tokenizer: ids
        labels = [str(t) for t in corrupted]
    return SweepResult(grid, list(header.layers), list(header.positions), list(header.heads),
                       list(header.clean_ids.ids), corrupted, header.clean_metric,
                       header.corrupted_metric, component, labels, result_logits, done.total_ms,
                       done.prompt_tokens_computed, done.prompt_tokens_cached)
