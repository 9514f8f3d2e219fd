"""Which model to chat with: the book's best chat model at a preset, found by artifact name.

Three kinds, best first (`KINDS`): ``rl`` (chapter 07's policy), ``sft`` (chapter 06's
fine-tuned model) and ``base`` (chapter 03's pretrained ``checkpoint``). The first two follow
the chat template (`nanolib.chat`); the base model never saw it, so it is given a plain prompt
and continues the text. Each kind is a named artifact (`ARTIFACTS`) resolved by `nanolib.runs`,
so a missing one is an error naming the `nanobook run` that makes it; a kind whose chapter is not
in book.yml yet is skipped when choosing and refused when asked for by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nanolib.config import Book, BookConfigError, load_book
from nanolib.runs import ArtifactMissingError, artifact

if TYPE_CHECKING:  # the engine imports torch: only when a model is loaded
    from nanolib.engine import Engine

KINDS = ("rl", "sft", "base")
ARTIFACTS = {"rl": "rl", "sft": "sft", "base": "checkpoint"}
TOKENIZER = "tokenizer"


@dataclass(frozen=True)
class ChatModelChoice:
    """A model to chat with: its kind, checkpoint directory, and whether it speaks the template."""

    kind: str
    path: Path
    tokenizer_path: Path
    preset: str
    skipped: tuple[str, ...] = ()  # why better kinds were not used, one phrase each

    @property
    def chat(self) -> bool:
        """True for chat models (rl, sft): prompts use the chat template; False: plain text."""
        return self.kind != "base"

    def describe(self) -> str:
        """One sentence: which model, and why not a better one."""
        what = {
            "rl": "the RL model (chapter 07), with the chat template",
            "sft": "the SFT model (chapter 06), with the chat template",
            "base": "the base model (chapter 03) with a plain prompt: it continues your text",
        }[self.kind]
        why = f" ({'; '.join(self.skipped)})" if self.skipped else ""
        return f"chatting with {what} at preset {self.preset!r}{why}"


def _producer(book: Book, kind: str) -> str | None:
    try:
        return book.producer_of(ARTIFACTS[kind]).number
    except BookConfigError:
        return None


def find_chat_model(
    preset: str, kind: str | None = None, book: Book | None = None
) -> ChatModelChoice:
    """The model of `kind` at `preset`, or the best one there is (rl, else sft, else base)."""
    book = book or load_book()
    book.preset(preset)
    if kind is not None and kind not in KINDS:
        raise BookConfigError(f"unknown model {kind!r}; valid models: {', '.join(KINDS)}")
    skipped: list[str] = []
    for k in [kind] if kind else KINDS:
        chapter = _producer(book, k)
        if chapter is None:
            if kind:
                raise ArtifactMissingError(
                    f"no chapter of book.yml makes the {k!r} model yet; "
                    f"valid here: {', '.join(x for x in KINDS if _producer(book, x))}"
                )
            skipped.append(f"no {k} chapter in book.yml")
            continue
        try:
            path = artifact(ARTIFACTS[k], preset, book)
        except ArtifactMissingError:
            if kind or k == KINDS[-1]:
                raise
            skipped.append(f"no {k} model: chapter {chapter} has not run at {preset!r}")
            continue
        tokenizer_path = artifact(TOKENIZER, preset, book)
        return ChatModelChoice(k, path, tokenizer_path, preset, tuple(skipped))
    raise ArtifactMissingError(f"no model to chat with at preset {preset!r}: {'; '.join(skipped)}")


def load_chat_engine(choice: ChatModelChoice, device: str = "cpu") -> Engine:
    """An `Engine` (model, tokenizer, the calculator and python tools) for a chosen model."""
    from nanolib.checkpoint import load_model
    from nanolib.engine import Engine
    from nanolib.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(choice.tokenizer_path)
    model, _ = load_model(choice.path, device)
    return Engine(model, tokenizer)
