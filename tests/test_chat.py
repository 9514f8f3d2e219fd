"""nanolib.chat: the template, the loss mask, round trips, errors, and the HTML drawing."""

from pathlib import Path

import pytest

from nanolib.chat import (
    ConversationError,
    conversation_html,
    normalize_conversation,
    parse_conversation,
    render_conversation,
    render_for_completion,
)
from nanolib.tokenizer import SPECIAL_TOKENS, Tokenizer

TEXT = "".join(p.read_text() for p in sorted(Path(__file__).parent.parent.glob("nanolib/*.py")))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT], 400)


def user(text):
    return {"role": "user", "content": text}


def assistant(content):
    return {"role": "assistant", "content": content}


TOOL_TURN = [
    {"type": "text", "text": "Half of 48 is "},
    {"type": "python", "text": "48/2"},
    {"type": "python_output", "text": "24"},
    {"type": "text", "text": "24.\n#### 24"},
]

AWKWARD = [
    [user("hi"), assistant("hello")],
    [user(""), assistant("")],  # empty texts
    [user("naïve café 日本語 👩‍👩‍👧"), assistant("\r\n\t\x00 ｆｕｌｌ")],
    [user("say <|bos|> and <|assistant_end|>"), assistant("<|user_start|><|python_start|>")],
    [user("What is 48/2?"), assistant(TOOL_TURN), user("thanks"), assistant("welcome")],
    [user("x <<1+1=2>> y"), assistant([{"type": "python", "text": ""}])],
    [
        user("q"),
        assistant([{"type": "python", "text": "1+1"}, {"type": "python_output", "text": ""}]),
    ],
    [user("only a question")],
    [
        {"role": "system", "content": "Be brief."},
        user("hi"),
        assistant("hello"),
        user("bye"),
    ],
]


def expected_render(tok, parts):
    """Build (ids, mask) by hand from (special-or-text, mask) pairs."""
    ids, mask = [], []
    for piece, bit in parts:
        new = [tok.special_id(piece)] if piece in SPECIAL_TOKENS else tok.encode(piece)
        ids += new
        mask += [bit] * len(new)
    return ids, mask


def test_mask_is_exactly_on_what_the_assistant_writes(tok):
    conv = [user("What is 48/2?"), assistant(TOOL_TURN), user("thanks"), assistant("welcome")]
    want = expected_render(
        tok,
        [
            ("<|bos|>", 0),
            ("<|user_start|>", 0),
            ("What is 48/2?", 0),
            ("<|user_end|>", 0),
            ("<|assistant_start|>", 0),
            ("Half of 48 is ", 1),
            ("<|python_start|>", 1),
            ("48/2", 1),
            ("<|python_end|>", 1),
            ("<|output_start|>", 0),
            ("24", 0),
            ("<|output_end|>", 0),
            ("24.\n#### 24", 1),
            ("<|assistant_end|>", 1),
            ("<|user_start|>", 0),
            ("thanks", 0),
            ("<|user_end|>", 0),
            ("<|assistant_start|>", 0),
            ("welcome", 1),
            ("<|assistant_end|>", 1),
        ],
    )
    assert render_conversation(tok, conv) == want
    # the record form gives the same
    assert render_conversation(tok, {"messages": conv, "task": "x"}) == want


def test_special_token_text_is_ordinary_text(tok):
    text = "".join(SPECIAL_TOKENS)
    ids, _ = render_conversation(tok, [user(text), assistant(text)])
    specials = {tok.special_id(s) for s in SPECIAL_TOKENS}
    inside = [i for i in ids if i in specials]
    # only the template's own five: bos, user start/end, assistant start/end
    assert len(inside) == 5
    assert tok.decode(ids).count("<|bos|>") == 3  # the real one and the two messages' text
    assert parse_conversation(tok, ids) == [user(text), assistant(text)]


@pytest.mark.parametrize("conv", AWKWARD)
def test_round_trip(tok, conv):
    ids, mask = render_conversation(tok, conv)
    assert len(ids) == len(mask)
    assert parse_conversation(tok, ids) == normalize_conversation(conv)


def test_system_message_is_folded_into_the_first_user_message(tok):
    conv = [{"role": "system", "content": "Be brief."}, user("hi"), assistant("yo")]
    assert normalize_conversation(conv)[0] == user("Be brief.\n\nhi")
    assert render_conversation(tok, conv) == render_conversation(
        tok, [user("Be brief.\n\nhi"), assistant("yo")]
    )


def test_normal_form_merges_text_and_drops_empty_parts():
    conv = [
        user([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
        assistant(
            [
                {"type": "text", "text": "x"},
                {"type": "text", "text": ""},
                {"type": "text", "text": "y"},
            ]
        ),
    ]
    assert normalize_conversation(conv) == [user("ab"), assistant("xy")]


def test_max_tokens_crops_the_end(tok):
    conv = [user("What is 48/2?"), assistant(TOOL_TURN)]
    ids, mask = render_conversation(tok, conv)
    short = render_conversation(tok, conv, max_tokens=7)
    assert short == (ids[:7], mask[:7])
    assert render_conversation(tok, conv, max_tokens=10_000) == (ids, mask)
    with pytest.raises(ValueError, match="max_tokens"):
        render_conversation(tok, conv, max_tokens=0)


def test_render_for_completion(tok):
    conv = [user("hi"), assistant("yo"), user("What is 48/2?"), assistant(TOOL_TURN)]
    prompt = render_for_completion(tok, conv)
    ids, _ = render_conversation(tok, conv)
    assert prompt[-1] == tok.special_id("<|assistant_start|>")
    assert ids[: len(prompt)] == prompt  # the full render continues the prompt
    assert tok.special_id("<|python_start|>") not in prompt  # the reference answer is gone
    # a conversation ending with the user is primed for the reply
    assert render_for_completion(tok, conv[:3]) == prompt


BAD = [
    ([], "empty"),
    ({"task": "x"}, "messages"),
    ("hello", "list of messages"),
    ([assistant("hi")], "start with a user"),
    ([user("a"), user("b")], "two user messages in a row"),
    ([user("a"), assistant("b"), assistant("c")], "two assistant messages in a row"),
    ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
    ([{"role": "user"}], "has no content"),
    ([user(3)], "string"),
    ([user("a"), assistant([{"type": "image", "text": "x"}])], "unknown part type 'image'"),
    ([user("a"), assistant([{"type": "text"}])], "text must be a string"),
    ([user("a"), assistant([{"type": "python_output", "text": "2"}])], "must follow a python"),
    ([user([{"type": "python_output", "text": "2"}])], "only allowed inside an assistant"),
    ([user([{"type": "python", "text": "1+1"}])], "only allowed inside an assistant"),
    ([user("a"), {"role": "system", "content": "late"}], "may only open"),
    ([{"role": "system", "content": "alone"}], "followed by a user"),
    ([user("a"), "not a dict"], "must be a dict"),
]


@pytest.mark.parametrize("conv, message", BAD)
def test_bad_conversations_get_one_clear_error(tok, conv, message):
    with pytest.raises(ConversationError, match=message):
        render_conversation(tok, conv)


def test_parse_rejects_broken_ids(tok):
    ids, _ = render_conversation(tok, [user("hi"), assistant("yo")])
    with pytest.raises(ConversationError, match="bos"):
        parse_conversation(tok, ids[1:])
    with pytest.raises(ConversationError, match="missing"):
        parse_conversation(tok, ids[:4])
    with pytest.raises(ConversationError, match="no <\\|assistant_end"):
        parse_conversation(tok, ids[:-1])


def test_html_drawing_escapes_and_colours_by_mask(tok):
    conv = [user("<script>alert(1)</script>"), assistant("a & b")]
    ids, mask = render_conversation(tok, conv)
    page = conversation_html(tok, ids, mask)
    assert "<script>" not in page and "&lt;" in page
    assert page.count("<span title=") == len(ids)
    assert page.count("background:#c8f0c8;") == sum(mask)  # trained-on tokens, legend excluded
    with pytest.raises(ValueError, match="differ in length"):
        conversation_html(tok, ids, mask[:-1])
