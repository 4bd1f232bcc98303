"""Layers of M models at once, for the models' `packed_loss` (a pack's member-batched arithmetic).

`params` are the members' parameters stacked on a leading member dimension under the names of
`torch.func.stack_module_state`; inputs are (M, ..., features). Written here because a pack that
vmaps the solo module runs every linear layer as a batched product plus a separate bias addition,
and torch offers no stacked-parameter layers: `baddbmm` adds the bias inside the product, and
the chained operations of a model are written once for all members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, params: dict, name: str) -> torch.Tensor:
    """nn.Linear `name` of each member applied to that member's rows: x (M, ..., in)."""
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias[:, None, :], flat, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], weight.shape[1])


def layer_norm(x: torch.Tensor, params: dict, name: str) -> torch.Tensor:
    """nn.LayerNorm `name` (default eps) of each member over the last dimension: x (M, ..., d)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    normed = F.layer_norm(x, x.shape[-1:])
    return torch.addcmul(
        params[f"{name}.bias"].view(shape), normed, params[f"{name}.weight"].view(shape)
    )


def silu_mlp(x: torch.Tensor, params: dict, name: str, layers: int = 3) -> torch.Tensor:
    """An nn.Sequential of `layers` linear layers with SiLU between them (indices 0, 2, 4, ...)."""
    for i in range(layers):
        x = linear(x, params, f"{name}.{2 * i}")
        if i < layers - 1:
            x = F.silu(x)
    return x


def embed_bags(bags: torch.Tensor, params: dict, drop: torch.Tensor | None = None) -> torch.Tensor:
    """The caption condition (`BagOfWords.embed_bags`) of each member: bags (M, B, vocab), rows
    where `drop` (M, B) is True given the empty bag."""
    if drop is not None:
        bags = bags * (~drop).to(bags.dtype)[..., None]
    return linear(bags, params, "text.proj")
