"""Muon + AdamW: orthogonalisation, routing, width scaling, a useful step, exact checkpoints."""

import io

import pytest
import torch
from torch._dynamo.utils import counters

from nanolib.model import GPT, GPTConfig
from nanolib.optim import Muon, build_optimizer, orthogonalize

CONFIG = GPTConfig(vocab_size=64, seq_len=16, n_layer=2, d_model=32, n_head=4, n_kv_head=2)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (128, 32)])
def test_newton_schulz_is_nearly_orthogonal(shape):
    torch.manual_seed(0)
    g = torch.randn(shape)
    x = orthogonalize(g)
    assert x.shape == g.shape
    singular_values = torch.linalg.svdvals(x)
    assert singular_values.min() > 0.5
    assert singular_values.max() < 1.2
    # Same singular vectors as g: close to the exact polar factor U·Vᵀ.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cosine = (x * (u @ vh)).sum() / (x.norm() * (u @ vh).norm())
    assert cosine > 0.95


def test_newton_schulz_lifts_small_singular_values():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32))
    v, _ = torch.linalg.qr(torch.randn(32, 32))
    g = u @ torch.diag(torch.logspace(0, -2, 32)) @ v.T  # singular values 1 … 0.01
    singular_values = torch.linalg.svdvals(orthogonalize(g))
    assert singular_values.min() > 0.5
    assert singular_values.max() < 1.2


def test_param_groups_go_to_the_right_optimizer():
    model = GPT(CONFIG)
    optimizer = build_optimizer(model)
    muon_params = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    adamw_params = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    hidden = {id(p) for p in model.blocks.parameters()}
    assert muon_params == hidden
    assert adamw_params == {id(model.wte.weight), id(model.lm_head.weight)}
    assert all(p.ndim == 2 for g in optimizer.muon.param_groups for p in g["params"])
    assert [g["name"] for g in optimizer.param_groups] == ["matrices", "embedding", "lm_head"]
    assert isinstance(optimizer.muon, Muon)


def test_adamw_lrs_scale_with_width_and_muon_lr_does_not():
    def lrs(d_model):
        config = GPTConfig(vocab_size=64, seq_len=16, n_layer=1, d_model=d_model, n_head=2)
        groups = build_optimizer(GPT(config), embedding_lr=0.3, unembedding_lr=0.008).param_groups
        return {g["name"]: g["initial_lr"] for g in groups}

    at_768, at_192 = lrs(768), lrs(192)
    assert at_768 == pytest.approx({"matrices": 0.02, "embedding": 0.3, "lm_head": 0.008})
    # d_model 192 = 768/4, so the AdamW LRs double: (1/4)^-0.5 = 2.
    assert at_192 == pytest.approx({"matrices": 0.02, "embedding": 0.6, "lm_head": 0.016})


def test_one_step_reduces_the_loss():
    torch.manual_seed(0)
    model = GPT(CONFIG)
    optimizer = build_optimizer(model)
    idx = torch.randint(0, CONFIG.vocab_size, (8, 16))
    before = model(idx[:, :-1], idx[:, 1:])
    before.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        after = model(idx[:, :-1], idx[:, 1:])
    assert after < before - 0.05


def test_muon_fits_a_linear_regression():
    torch.manual_seed(0)
    w_true = torch.randn(8, 16)
    x = torch.randn(256, 16)
    y = x @ w_true.T
    w = torch.nn.Parameter(torch.zeros(8, 16))
    optimizer = Muon([w], lr=0.1, momentum=0.9)
    first = None
    for _ in range(50):
        loss = ((x @ w.T - y) ** 2).mean()
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        w.grad = None
    assert loss.item() < 0.05 * first


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def _train(model, optimizer, batches):
    for idx in batches:
        model(idx[:, :-1], idx[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_state_dict_round_trip_continues_bit_identically():
    torch.manual_seed(0)
    batches = [torch.randint(0, CONFIG.vocab_size, (4, 17)) for _ in range(8)]
    model = GPT(CONFIG)
    optimizer = build_optimizer(model, weight_decay=0.1)
    _train(model, optimizer, batches[:4])
    for group in optimizer.param_groups:  # as an LR schedule would
        group["lr"] = group["initial_lr"] * 0.5
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, buffer)
    _train(model, optimizer, batches[4:])

    torch.manual_seed(123)  # a different init, overwritten by the checkpoint
    restored = GPT(CONFIG)
    restored_optimizer = build_optimizer(restored, weight_decay=0.1)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    restored.load_state_dict(checkpoint["model"])
    restored_optimizer.load_state_dict(checkpoint["optim"])
    assert [g["lr"] for g in restored_optimizer.param_groups] == [
        g["initial_lr"] * 0.5 for g in restored_optimizer.param_groups
    ]
    _train(restored, restored_optimizer, batches[4:])

    for (name, a), (_, b) in zip(model.named_parameters(), restored.named_parameters()):
        assert torch.equal(a, b), name


def _reference_muon_step(params, buffers, lr, momentum, weight_decay):
    """The plain per-matrix Muon step, written out: what batching and compiling must reproduce."""
    with torch.no_grad():
        for p, buf in zip(params, buffers):
            buf.lerp_(p.grad, 1 - momentum)
            update = orthogonalize(p.grad.lerp(buf, momentum))
            p.mul_(1 - lr * weight_decay)
            p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)


@pytest.mark.parametrize(
    "batched, compiled", [(False, False), (True, False), (True, True)], ids=str
)
def test_batched_and_compiled_muon_match_the_per_matrix_reference(batched, compiled):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    reference = [p.detach().clone() for p in model.blocks.parameters()]
    buffers = [torch.zeros_like(p) for p in reference]
    optimizer = build_optimizer(model, weight_decay=0.1, batched=batched, compile=compiled)
    shapes = {tuple(p.shape) for p in reference}
    assert len(shapes) < len(reference)  # some shapes repeat, so batches of several exist
    for step in range(5):
        idx = torch.randint(0, CONFIG.vocab_size, (4, 17))
        model(idx[:, :-1], idx[:, 1:]).backward()
        for p, q in zip(reference, model.blocks.parameters()):
            p.grad = q.grad.clone()
        lr = 0.02 * (1 - step / 10)  # a changing LR, as a schedule gives (no recompiles)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * (1 - step / 10)
        _reference_muon_step(reference, buffers, lr, 0.95, 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs  # a new LR is no recompile
    for p, q in zip(reference, model.blocks.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    for buf, q in zip(buffers, model.blocks.parameters()):
        torch.testing.assert_close(optimizer.muon.state[q]["momentum_buffer"], buf)
