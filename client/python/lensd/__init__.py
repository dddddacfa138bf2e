"""Python client for lensd: streamed generation and TransformerLens-style activation caches.

    import lensd
    client = lensd.Client("localhost:50051")
    logits, cache = client.run_with_cache("Hello world", names_filter="blocks.*.hook_resid_post")
    cache["blocks.0.hook_resid_post"].shape   # (1, P, d_model)
"""
from lensd.client import PAD_ID, ActivationCache, Client, GenerateDone, TokenEvent
from lensd.errors import ERRORS, Error
from lensd.names import act_name
from lensd.interventions import add, noise, patch, project, sae_clamp, scale, set, tensor, zero
from lensd.remote import RemoteModel
from lensd.saes import dense_features, edit_features, sae, steer_feature
from lensd.sweep import SweepResult, hook_dot, kl, logit_diff, logits, logprob, loss

__all__ = ["PAD_ID", "act_name", "ActivationCache", "Client", "RemoteModel", "GenerateDone", "SweepResult", "TokenEvent", "add", "kl", "loss",
           "logit_diff", "logits", "logprob", "noise", "patch", "project", "sae", "sae_clamp", "scale",
           "dense_features", "edit_features", "steer_feature", "hook_dot",
           "set", "tensor", "zero", "Error"]

# lensd.InvalidArgument, lensd.ResourceExhausted, lensd.Unavailable, ...: one per status code.
for _error in ERRORS.values():
    globals()[_error.__name__] = _error
    __all__.append(_error.__name__)
del _error
