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


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton–Schulz, for 2-D weight matrices."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
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

    @torch.no_grad()
    def step(self) -> None:
        """Update every matrix that has a gradient."""
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                g = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalize(g, group["ns_steps"])
                # A semi-orthogonal (out × in) update has entries of RMS 1/√max(out, in); this
                # brings tall matrices (out > in, e.g. c_fc) up to 1/√in like the others.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * scale)


class Optimizers:
    """Muon and AdamW stepped, zeroed, scheduled and checkpointed as one optimizer."""

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon = muon
        self.adamw = adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every group of both optimizers; each has "name", "lr" and "initial_lr"."""
        return self.muon.param_groups + self.adamw.param_groups

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
) -> Optimizers:
    """Muon for the blocks' matrices, AdamW for wte and lm_head, LRs scaled for the width.

    embedding_lr and unembedding_lr are the values for d_model = 768; the AdamW groups get them
    × (d_model/768)^-0.5: a wider head sums more coordinates into each logit, so each coordinate
    needs a smaller step (the muP-flavoured rule nanochat found to carry LRs across depths).
    Muon's LR is not scaled: an orthogonalised update already has a size set by the matrix shape.
    weight_decay (decoupled) applies to the Muon matrices only.
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
    )
    adamw = torch.optim.AdamW(
        [
            {"params": embedding, "lr": embedding_lr * width_scale, "name": "embedding"},
            {"params": lm_head, "lr": unembedding_lr * width_scale, "name": "lm_head"},
        ],
        betas=betas,
        eps=eps,
        weight_decay=0.0,
    )
    for group in muon.param_groups + adamw.param_groups:
        group["initial_lr"] = group["lr"]
    return Optimizers(muon, adamw)
