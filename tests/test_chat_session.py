"""Chatting: which model is chosen, and a conversation streamed, kept, cropped and recorded."""

from __future__ import annotations

import textwrap

import pytest
import torch

from nanolib.chat import render_for_completion
from nanolib.chat_models import find_chat_model, load_chat_engine
from nanolib.chat_session import ChatSession
from nanolib.config import BookConfigError, load_book
from nanolib.engine import Engine
from nanolib.model import GPT, GPTConfig
from nanolib.runs import ArtifactMissingError
from nanolib.tokenizer import Tokenizer

from helpers import Typist, make_chat_runs, save_model_run

# ------------------------------------------------------------------------------------------------
# which model


CHAT_CHAPTERS = {
    "01_tokenizer": "tokenizer",
    "03_pretraining": "checkpoint",
    "06_sft": "sft",
    "07_rl": "rl",
}


def _book_with_chat_chapters(root, chapters=CHAT_CHAPTERS):
    """A book whose chapters make these artifacts (by default: tokenizer, base, sft, rl)."""
    (root / "chapters").mkdir(parents=True)
    lines = ["title: Chat models", "render_preset: smoke", "chapters:"]
    for slug, artifact in chapters.items():
        (root / "chapters" / f"{slug}.py").write_text(
            '# %% tags=["parameters"]\npreset = "tiny"\nrun_dir = None\n'
        )
        lines += [
            f"  - file: chapters/{slug}.py",
            f"    title: {slug}",
            f"    produces: [{artifact}]",
        ]
    lines += textwrap.dedent("""\
        presets:
          smoke:
            description: tests
            device: cpu
        """).splitlines()
    (root / "book.yml").write_text("\n".join(lines) + "\n")
    return load_book(root / "book.yml")


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBOOK_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _small_gpt(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, seq_len=64, n_layer=1, d_model=32, n_head=1)).eval()


def test_the_best_model_is_rl_then_sft_then_base(tmp_path, runs, tokenizer_dir):
    book = _book_with_chat_chapters(tmp_path / "book")
    make_chat_runs(runs, tokenizer_dir)
    vocab = Tokenizer.load(tokenizer_dir).vocab_size

    base = find_chat_model("smoke", book=book)
    assert base.kind == "base" and not base.chat
    assert "chapter 07 has not run" in base.describe() and "plain prompt" in base.describe()

    save_model_run(runs, "06_sft", "sft", _small_gpt(vocab))
    sft = find_chat_model("smoke", book=book)
    assert sft.kind == "sft" and sft.chat and sft.path == runs / "smoke/06_sft/sft"

    save_model_run(runs, "07_rl", "rl", _small_gpt(vocab))
    assert find_chat_model("smoke", book=book).kind == "rl"
    assert find_chat_model("smoke", "base", book=book).kind == "base"  # asked for by name

    (runs / "smoke/07_rl/manifest.json").write_text('{"status": "running"}')  # not a good run
    assert find_chat_model("smoke", book=book).kind == "sft"
    engine = load_chat_engine(find_chat_model("smoke", book=book))
    assert engine.tokenizer is not None and engine.config.vocab_size == vocab


def test_a_missing_model_names_the_command_that_makes_it(tmp_path, runs):
    book = _book_with_chat_chapters(tmp_path / "book")
    with pytest.raises(ArtifactMissingError, match=r"nanobook run 03 --preset smoke"):
        find_chat_model("smoke", book=book)
    with pytest.raises(ArtifactMissingError, match=r"nanobook run 06 --preset smoke"):
        find_chat_model("smoke", "sft", book=book)
    with pytest.raises(BookConfigError, match="valid models: rl, sft, base"):
        find_chat_model("smoke", "gpt5", book=book)
    with pytest.raises(BookConfigError, match="unknown preset"):
        find_chat_model("smok", book=book)


def test_a_kind_no_chapter_makes_is_skipped_or_refused(tmp_path, runs):
    book = _book_with_chat_chapters(tmp_path / "book", {"01_tokenizer": "tokenizer"})
    with pytest.raises(ArtifactMissingError, match="no chapter of book.yml makes the 'rl' model"):
        find_chat_model("smoke", "rl", book=book)
    with pytest.raises(ArtifactMissingError, match="no model to chat with at preset 'smoke'"):
        find_chat_model("smoke", book=book)


# ------------------------------------------------------------------------------------------------
# a conversation


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(tokenizer_dir)


def session_writing(tok: Tokenizer, script: list[int], chat: bool = True, seq_len: int = 256):
    """A ChatSession whose model writes `script` after every prompt."""
    return ChatSession(Engine(Typist(tok.vocab_size, script, seq_len), tok), chat=chat)


def test_a_reply_streams_and_joins_the_conversation(tok):
    end = tok.special_id("<|assistant_end|>")
    session = session_writing(tok, [*tok.encode("Hello there, reader!"), end])
    events = list(session.reply("Hi", temperature=0))
    assert "".join(e.text for e in events if e.kind == "text") == "Hello there, reader!"
    assert len([e for e in events if e.kind == "text"]) > 1  # streamed, not one block
    info = events[-1].info
    assert events[-1].kind == "end" and info["stopped"] and info["dropped_turns"] == 0
    assert info["tokens"] == len(tok.encode("Hello there, reader!")) + 1
    assert session.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there, reader!"},
    ]
    # the next prompt holds the whole conversation, in the chat template
    ids, max_tokens, dropped = session.prompt("And you?", 10)
    expected = render_for_completion(
        tok, [*session.messages, {"role": "user", "content": "And you?"}]
    )
    assert ids == expected and max_tokens == 10 and dropped == 0
    session.clear()
    assert session.messages == [] and session.prompt("x", 5)[0] == render_for_completion(
        tok, [{"role": "user", "content": "x"}]
    )


def test_tool_calls_stream_as_their_own_events(tok):
    sp = tok.special_id
    script = [
        sp("<|python_start|>"), *tok.encode("6*7"), sp("<|python_end|>"),
        sp("<|output_start|>"), *tok.encode("42"), sp("<|output_end|>"),  # forced by the engine
        *tok.encode(" is the answer"), sp("<|assistant_end|>"),
    ]  # fmt: skip
    session = session_writing(tok, script)
    events = [e for e in session.reply("What is 6*7?", temperature=0) if e.kind != "end"]
    kinds = [(k, "".join(e.text for e in events if e.kind == k)) for k in ("python", "output")]
    assert kinds == [("python", "6*7"), ("output", "42")]
    assert "".join(e.text for e in events if e.kind == "text") == " is the answer"
    assert [e.kind for e in events][:1] == ["python"] and events[-1].kind == "text"
    assert session.messages[-1]["content"] == [
        {"type": "python", "text": "6*7"},
        {"type": "python_output", "text": "42"},
        {"type": "text", "text": " is the answer"},
    ]


def test_an_output_the_model_writes_itself_is_recorded_as_text(tok):
    sp = tok.special_id
    script = [
        sp("<|output_start|>"),
        *tok.encode("99"),
        sp("<|output_end|>"),
        sp("<|assistant_end|>"),
    ]
    session = session_writing(tok, script)
    list(session.reply("Hi", temperature=0))
    assert session.messages[-1]["content"] == "99"  # no tool call before it: plain text


def test_characters_split_across_tokens_are_never_shown_half_made():
    byte_tok = Tokenizer.train(["abc"], 256 + 9)  # one token per byte
    text = "héllo → 世界 ✓"
    script = [*byte_tok.encode(text), byte_tok.special_id("<|assistant_end|>")]
    events = list(session_writing(byte_tok, script).reply("hi", temperature=0))
    pieces = [e.text for e in events if e.kind == "text"]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_old_turns_are_dropped_then_the_reply_shortened_then_refused(tok):
    end = tok.special_id("<|assistant_end|>")
    session = session_writing(tok, [*tok.encode("ok"), end], seq_len=64)
    for i in range(4):
        list(session.reply(f"message number {i} with a few words in it", temperature=0))
    ids, max_tokens, dropped = session.prompt("last one", 20)
    assert dropped >= 1 and len(ids) + max_tokens <= 64 and max_tokens == 20
    assert session.prompt("short", 500)[1] == 64 - len(render_for_completion(
        tok, [{"role": "user", "content": "short"}]
    ))  # fmt: skip
    with pytest.raises(
        ValueError, match=r"this model reads 64 tokens, so a message may be at most"
    ):
        session.prompt("word " * 200, 5)
    with pytest.raises(ValueError, match="empty"):
        session.reply("   ")


def test_a_reply_the_reader_stops_keeps_what_was_said(tok):
    end = tok.special_id("<|assistant_end|>")
    session = session_writing(tok, [*tok.encode(" one two three four five six"), end])
    stream = session.reply("count", temperature=0)
    said = "".join(next(stream).text for _ in range(3))
    stream.close()
    assert session.messages[-1] == {"role": "assistant", "content": said}


def test_a_base_model_continues_plain_text(tok):
    bos = tok.bos_id
    session = session_writing(tok, [*tok.encode(" upon a time"), bos], chat=False)
    events = list(session.reply("Once", temperature=0))
    assert "".join(e.text for e in events if e.kind == "text") == " upon a time"
    assert events[-1].info["stopped"]  # <|bos|>: a new document
    ids, _, _ = session.prompt("The end", 5)
    assert ids == [bos, *tok.encode("Once upon a time\nThe end")]


def test_greedy_chat_equals_the_engines_output(tok):
    model = _small_gpt(tok.vocab_size)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # a model with opinions
    engine = Engine(model, tok)
    session = ChatSession(engine)
    events = list(session.reply("Tell me", max_tokens=12, temperature=0))
    out = engine.generate(
        render_for_completion(tok, [{"role": "user", "content": "Tell me"}]), max_tokens=12,
        temperature=0,
    )  # fmt: skip
    tokens = out.tokens[0][:-1] if out.stopped[0] else out.tokens[0]
    shown = "".join(e.text for e in events if e.kind != "end")
    specials = ("<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>")
    expected = tok.decode(tokens)
    for s in specials:
        expected = expected.replace(s, "")
    assert shown == expected and events[-1].info["tokens"] == len(out.tokens[0])
