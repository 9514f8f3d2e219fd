import json

import pytest

from nanolib import core_bundle
from nanolib import core_eval as core
from nanolib.checkpoint import META
from nanolib.model import GPT, GPTConfig


def test_evaluate_checkpoints_writes_and_reuses(tmp_path, monkeypatch):
    from nanolib.data import iter_texts
    from nanolib.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(iter_texts("tiny", "val", max_chars=50_000), vocab_size=300)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_kv_head=1,
                    d_model=32, seq_len=64)  # fmt: skip
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    import dataclasses

    import torch

    torch.manual_seed(0)
    torch.save(GPT(cfg).state_dict(), ckpt / "model_000000.pt")
    (ckpt / META).write_text(json.dumps({"model": dataclasses.asdict(cfg), "step": 0}))
    out = tmp_path / "core"
    first = core.evaluate_checkpoints({"m": ckpt}, tokenizer, core_bundle.tiny_bundle_dir(), out, 3,
                                      progress=False)  # fmt: skip
    assert list(first.model) == ["m"] and not first.reused[0] and first["items"][0] == 24
    assert {p.name for p in out.iterdir()} == {"m.csv", "m.json"}
    assert json.loads((out / "m.json").read_text())["max_per_task"] == 3
    again = core.evaluate_checkpoints({"m": ckpt}, tokenizer, core_bundle.tiny_bundle_dir(), out, 3,
                                      progress=False)  # fmt: skip
    assert again.reused[0] and again.core_v1[0] == first.core_v1[0]
    other = core.evaluate_checkpoints({"m": ckpt}, tokenizer, core_bundle.tiny_bundle_dir(), out, 2,
                                      progress=False)  # fmt: skip
    assert not other.reused[0] and other["items"][0] == 16


def test_evaluate_checkpoints_with_a_tokenizer_per_model(tmp_path):
    """Models of two vocabularies in one call, each scored with the tokenizer it trained with."""
    import dataclasses

    import torch

    from nanolib.data import iter_texts
    from nanolib.tokenizer import Tokenizer

    texts = list(iter_texts("tiny", "val", max_chars=50_000))
    tokenizers = {"small": Tokenizer.train(texts, 300), "large": Tokenizer.train(texts, 400)}
    checkpoints = {}
    for name, tok in tokenizers.items():
        cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_kv_head=1,
                        d_model=32, seq_len=64)  # fmt: skip
        checkpoints[name] = ckpt = tmp_path / name
        ckpt.mkdir()
        torch.manual_seed(0)
        torch.save(GPT(cfg).state_dict(), ckpt / "model_000000.pt")
        (ckpt / META).write_text(json.dumps({"model": dataclasses.asdict(cfg), "step": 0}))
    bundle, out = core_bundle.tiny_bundle_dir(), tmp_path / "core"
    done = core.evaluate_checkpoints(checkpoints, tokenizers, bundle, out, 2, progress=False)
    assert list(done.model) == ["small", "large"] and (done["items"] == 16).all()
    with pytest.raises(ValueError, match="vocabulary of 400 ids but the tokenizer has 3"):
        core.evaluate_checkpoints({"large": checkpoints["large"]}, tokenizers["small"], bundle,
                                  tmp_path / "again", 2, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"no tokenizer given for \['large'\]"):
        core.evaluate_checkpoints(checkpoints, {"small": tokenizers["small"]}, bundle, out, 2)
