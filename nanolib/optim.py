"""Muon for the hidden matrices, AdamW for the embedding and the head, behind one object.

Muon (Jordan et al., 2024) keeps a Nesterov momentum of each weight matrix's gradient and steps
along its orthogonalised version U·Vᵀ (the gradient's singular values all set to 1), found by a
few Newton–Schulz iterations. Embedding and head are lookups/readouts, not hidden linear maps,
and stay with AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from nanolib.model import unwrap_model

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
REFERENCE_D_MODEL = 768


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U·Vᵀ for g = U·S·Vᵀ, by a quintic Newton–Schulz iteration.

    With these coefficients the singular values land between about 0.55 and 1.15, not at 1:
    the iteration trades precision for a steep slope at 0, so small singular values grow fast.
    Runs in bf16 on CUDA and fp32 elsewhere.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # work with the smaller Gram matrix
        x = x.mT
    # Frobenius norm ≥ spectral norm, so every singular value starts in (0, 1].
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


def muon_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    momentum: float | torch.Tensor,
    lr: float | torch.Tensor,
    weight_decay: float | torch.Tensor,
    nesterov: bool,
    ns_steps: int,
) -> None:
    """One Muon step for matrices of one shape, orthogonalised together as one batch.

    Compiled, it takes the hyperparameters as 0-D CPU tensors (torch uses them as scalars on a
    GPU too), so that a schedule's new LR does not recompile it. One matrix is a batch of one
    (views, no copies).
    """
    if len(params) == 1:
        p, grad, buf = params[0][None], grads[0][None], buffers[0][None]
    else:
        p, grad, buf = torch.stack(params), torch.stack(grads), torch.stack(buffers)
    buf.lerp_(grad, 1 - momentum)
    g = grad.lerp(buf, momentum) if nesterov else buf
    update = orthogonalize(g, ns_steps)
    # A semi-orthogonal (out × in) update has entries of RMS 1/√max(out, in); this brings tall
    # matrices (out > in, e.g. c_fc) up to 1/√in like the others.
    scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
    p.mul_(1 - lr * weight_decay)
    p.sub_(update * (lr * scale))
    if len(params) > 1:
        torch._foreach_copy_(params, list(p.unbind(0)))
        torch._foreach_copy_(buffers, list(buf.unbind(0)))


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton–Schulz, for 2-D weight matrices.

    batched: matrices of one shape (and dtype, device) are stacked and orthogonalised as one
    batched Newton–Schulz, not one by one. compile: the update runs through torch.compile.
    Neither changes the result beyond float rounding, nor the state a checkpoint holds.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        *,
        batched: bool = True,
        compile: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got shape {tuple(p.shape)}")
        # Not hyperparameters: kept out of the param groups, so out of checkpoints.
        self.batched = batched
        self.compiled = False
        self.update = muon_update
        self.use_compiled(compile)

    def use_compiled(self, on: bool = True) -> None:
        """Run the update through torch.compile (on) or eagerly from the next step on."""
        self.compiled = on
        if not on:
            self.update = muon_update
            return
        # One graph per (shape, count) of matrices, the same code for every model: a sweep of
        # many widths and depths in one process needs more than dynamo's default 8 entries.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.update = torch.compile(muon_update, dynamic=False)

    @torch.no_grad()
    def step(self) -> None:
        """Update every matrix that has a gradient."""
        for group in self.param_groups:
            buckets: dict[Any, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                key = (p.shape, p.dtype, p.device) if self.batched else id(p)
                buckets.setdefault(key, []).append(p)
            hyper = [group["momentum"], group["lr"], group["weight_decay"]]
            if self.compiled:  # 0-D CPU tensors, so a new LR is an input, not a recompile
                hyper = [torch.tensor(v, dtype=torch.float32, device="cpu") for v in hyper]
            for params in buckets.values():
                self.update(
                    params,
                    [p.grad for p in params],
                    [self.state[p]["momentum_buffer"] for p in params],
                    *hyper,
                    group["nesterov"],
                    group["ns_steps"],
                )


class Optimizers:
    """Muon and AdamW stepped, zeroed, scheduled and checkpointed as one optimizer."""

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon = muon
        self.adamw = adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every group of both optimizers; each has "name", "lr" and "initial_lr"."""
        return self.muon.param_groups + self.adamw.param_groups

    def use_compiled(self, on: bool = True) -> None:
        """Muon's update through torch.compile (on) or eagerly; AdamW is unchanged."""
        self.muon.use_compiled(on)

    def step(self) -> None:
        """Step both optimizers."""
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """Both optimizers' state and hyperparameters, for a checkpoint."""
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; training then continues bit-identically."""
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


def build_optimizer(
    model: nn.Module,
    *,
    matrix_lr: float = 0.02,
    embedding_lr: float = 0.3,
    unembedding_lr: float = 0.008,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.8, 0.95),
    eps: float = 1e-10,
    momentum: float = 0.95,
    batched: bool = True,
    compile: bool = False,
) -> Optimizers:
    """Muon for the blocks' matrices, AdamW for wte and lm_head, LRs scaled for the width.

    embedding_lr and unembedding_lr are the values for d_model = 768; the AdamW groups get them
    × (d_model/768)^-0.5: a wider head sums more coordinates into each logit, so each coordinate
    needs a smaller step (the muP-flavoured rule nanochat found to carry LRs across depths).
    Muon's LR is not scaled: an orthogonalised update already has a size set by the matrix shape.
    weight_decay (decoupled) applies to the Muon matrices only. batched and compile are Muon's
    (same-shape matrices orthogonalised as one batch; the update through torch.compile); on a
    GPU AdamW uses its fused kernel.
    """
    model = unwrap_model(model)
    width_scale = (model.config.d_model / REFERENCE_D_MODEL) ** -0.5
    matrices, embedding, lm_head = [], [], []
    for name, p in model.named_parameters():
        if name.startswith("wte."):
            embedding.append(p)
        elif name.startswith("lm_head."):
            lm_head.append(p)
        elif name.startswith("blocks.") and p.ndim == 2:
            matrices.append(p)
        else:
            raise ValueError(f"build_optimizer has no group for parameter {name} {tuple(p.shape)}")
    muon = Muon(
        [{"params": matrices, "name": "matrices"}],
        lr=matrix_lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batched=batched,
        compile=compile,
    )
    adamw = torch.optim.AdamW(
        [
            {"params": embedding, "lr": embedding_lr * width_scale, "name": "embedding"},
            {"params": lm_head, "lr": unembedding_lr * width_scale, "name": "lm_head"},
        ],
        betas=betas,
        eps=eps,
        weight_decay=0.0,
        fused=model.wte.weight.is_cuda or None,
    )
    for group in muon.param_groups + adamw.param_groups:
        group["initial_lr"] = group["lr"]
    return Optimizers(muon, adamw)
