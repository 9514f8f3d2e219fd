# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. The tokenizer
#
# A language model reads integers, not text. The tokenizer is the dictionary between the two, and
# it is the first thing we train: every later chapter — the model's vocabulary, its loss in bits per
# byte, the chat format — is built on the one we make here.
#
# **What you will build**
# - a byte-level **BPE** tokenizer trained with `rustbpe` and served by a `tiktoken` encoding,
#   with the special tokens a chat model needs;
# - a twenty-line teaching version of BPE that learns exactly the same merges;
# - a compression table (bytes per token) across vocabulary sizes and split rules, beside the
#   published GPT-2 and GPT-4 figures.
#
# **Prerequisites**: Python and a little regex. Nothing from earlier chapters.
#
# | preset | data | vocab | time |
# |---|---|---|---|
# | `smoke` | shipped corpus, 0.2 MB | 512 | seconds |
# | `tiny` | shipped corpus, all of it | 4,096 | ≈ 1 min on 2 CPU cores |
# | `d12`, `miniseries`, `speedrun` | FineWeb-Edu, 2 B characters | 32,768 | minutes |

# %% tags=["parameters"]
# Every None takes the preset's value (`nanobook params 01 --preset tiny` lists them, with ranges)
preset = "tiny"  # type: str  a preset of book.yml: smoke | tiny | d12 | miniseries | speedrun
data = None  # type: str  text source: tiny | fineweb-edu
vocab_size = None  # type: int  BPE vocabulary, special tokens included (≥ 265)
max_chars = None  # type: int  characters of training text for the BPE trainer
doc_cap = None  # type: int  each document is cropped to this many characters
sweep_vocab_sizes = None  # type: list  vocabularies of the compression sweep
sweep_max_chars = None  # type: int  training text of each tokenizer of the sweep
seed = None  # type: int  random seed
run_dir = None  # type: str  where the run is written (None: runs/<preset>/01_tokenizer)

# %%
import time
from collections import Counter

import numpy as np
import pandas as pd
import regex
from IPython.display import HTML, display

from nanolib.claims import expect
from nanolib.data import iter_texts
from nanolib.html import escape_text
from nanolib.plots import OURS, PUBLISHED, figure
from nanolib.runs import start_chapter
from nanolib.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERNS, Tokenizer, bytes_per_token

run = start_chapter("01_tokenizer", preset, globals())
print(run.summary())

# %% [markdown]
# ## Text is bytes
#
# Every string is a sequence of UTF-8 bytes, and there are only 256 possible bytes. A tokenizer
# that starts from bytes can therefore represent *any* text — emoji, Chinese, broken encodings —
# with no "unknown" token. The price is length: one byte per token is a very long sequence.

# %%
sample = "The dial: 1 GPU, 8 GPUs — 计算 🙂"
raw = list(sample.encode("utf-8"))
print(f"{len(sample)} characters → {len(raw)} bytes")
print(raw)

# %% [markdown]
# ## BPE in twenty lines
#
# Byte-pair encoding shortens the sequence by learning merges: count every adjacent pair of
# tokens in the training text, give the most frequent pair a new id, replace it everywhere, and
# repeat until the vocabulary is full. Two details make it work on real text:
#
# 1. **A split regex** first cuts the text into chunks (words, numbers, punctuation runs,
#    whitespace), and merges never cross a chunk boundary — so `dog.` and `dog!` share `dog`.
# 2. **Ties** between equally frequent pairs are broken by the smaller pair of ids, which makes
#    training deterministic.
#
# Here is the whole algorithm, written for reading, not speed:


# %%
def teach_bpe(text: str, n_merges: int, pattern: str) -> list[tuple[int, int]]:
    """Learn n_merges BPE merges: the most frequent adjacent pair wins, ties to the smaller ids."""
    chunks = Counter(regex.findall(pattern, text))
    seqs = {chunk: list(chunk.encode("utf-8")) for chunk in chunks}
    merges = []
    for new_id in range(256, 256 + n_merges):
        pairs = Counter()
        for chunk, count in chunks.items():
            for pair in zip(seqs[chunk], seqs[chunk][1:]):
                pairs[pair] += count
        top = max(pairs.values())
        best = min(p for p, c in pairs.items() if c == top)
        merges.append(best)
        for chunk, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if s[i : i + 2] == list(best):
                    out.append(new_id)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[chunk] = out
    return merges


# %% [markdown]
# Train it on a few thousand characters of our corpus, and train the library's tokenizer
# (`nanolib.tokenizer`, which calls the Rust `rustbpe` trainer) on the same text. The two must
# learn the same tokens in the same order.

# %%
small_text = "".join(iter_texts(run.p.data, "train", max_chars=20_000))
n_merges = 100
teach = teach_bpe(small_text, n_merges, SPLIT_PATTERNS["gpt4"])
vocab = {i: bytes([i]) for i in range(256)}
for new_id, (a, b) in enumerate(teach, start=256):
    vocab[new_id] = vocab[a] + vocab[b]

lib = Tokenizer.train([small_text], 256 + n_merges + len(SPECIAL_TOKENS))
lib_tokens = [lib.id_to_bytes(i) for i in range(256, 256 + n_merges)]
assert lib_tokens == [vocab[i] for i in range(256, 256 + n_merges)]
print(f"teaching BPE and rustbpe agree on all {n_merges} merges")

# %%
pd.DataFrame(
    [
        {"id": i, "left": vocab[a], "right": vocab[b], "new token": vocab[i]}
        for i, (a, b) in enumerate(teach[:12], start=256)
    ]
)

# %% [markdown]
# The first merges are the commonest pairs of English: a space before a letter, `th`, `he`,
# `in`. Later merges build whole words out of earlier ones.
#
# ## The split regex
#
# GPT-2 and GPT-4 cut text differently before BPE sees it. GPT-4's rule keeps digits in groups of
# at most three (so numbers are not memorised whole), treats contractions case-insensitively and
# lets a newline ride with punctuation. Look at how each cuts the same line:

# %%
line = "We'LL pay $1234567 on 2024-05-01!!\n\n  Then   rest."
for name, pattern in SPLIT_PATTERNS.items():
    print(f"{name}: {regex.findall(pattern, line)}")

# %% [markdown]
# ## Training the real tokenizer
#
# The heavy step: read the training split's parquet shards with `pyarrow` (the same code reads
# FineWeb-Edu shards at the GPU presets), crop each document, and train a `vocab_size` BPE. The
# result is saved in the run directory as the `tokenizer` artifact that every later chapter loads
# — but only if it is what was asked for: too little text runs out of pairs to merge early.

# %%
t0 = time.time()
texts = iter_texts(run.p.data, "train", max_chars=run.p.max_chars, doc_cap=run.p.doc_cap)
tokenizer = Tokenizer.train(texts, run.p.vocab_size)
train_time_s = time.time() - t0
if tokenizer.vocab_size != run.p.vocab_size:
    raise RuntimeError(
        f"asked for a {run.p.vocab_size:,}-id tokenizer, but {run.p.max_chars:,} characters of "
        f"text ran out of pairs to merge at {tokenizer.vocab_size:,} ids; raise max_chars"
    )
tokenizer.save(run.path("tokenizer"))
run.log(event="train", vocab_size=tokenizer.vocab_size, train_time_s=train_time_s)
print(f"trained a {tokenizer.vocab_size:,}-id tokenizer in {train_time_s:.1f} s")

# %% [markdown]
# ## Looking at the vocabulary
#
# The special tokens come last. `<|bos|>` starts every document in pretraining; the others
# frame the turns of a conversation and the calls to a Python tool (chapter 6).

# %%
pd.DataFrame({"token": SPECIAL_TOKENS, "id": [tokenizer.special_id(t) for t in SPECIAL_TOKENS]})

# %%
n_bpe = len(tokenizer.mergeable_ranks)  # ids 0..n_bpe-1 are bytes and merges; specials follow
lengths = tokenizer.token_bytes()[:n_bpe]
longest = sorted(range(n_bpe), key=lambda i: -lengths[i])[:15]
print("longest tokens:", [tokenizer.id_to_bytes(i).decode("utf-8", "replace") for i in longest])
counts = sorted(Counter(lengths).items())
fig = figure("How long are the tokens?", "bytes in the token", "number of tokens")
fig.add_bar(x=[k for k, _ in counts], y=[c for _, c in counts], name="tokens")
fig.show()

# %% [markdown]
# Here is a held-out passage as the model will see it, one colour per token. Common words are a
# single token (with their leading space); rare words break into pieces.

# %%
val_text = "".join(iter_texts(run.p.data, "val", max_chars=400))[:400]
colours = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5"]
spans = [
    f'<span style="background:{colours[k % 5]}">{escape_text(tokenizer.decode([i]))}</span>'
    for k, i in enumerate(tokenizer.encode(val_text))
]
display(HTML(f'<div style="white-space:pre-wrap;font-family:monospace">{"".join(spans)}</div>'))

# %% [markdown]
# ## Awkward text
#
# A tokenizer must round-trip everything: text in scripts it never saw, emoji made of several
# code points, and the empty string. Decoding an arbitrary slice of ids can split a multi-byte
# character; `decode` then shows U+FFFD (�) while `decode_bytes` keeps the exact bytes.

# %%
awkward = [
    "",
    " ",
    "naïve café",
    "日本語のテキスト",
    "👩‍👩‍👧 family",
    "tab\tand\r\nCRLF",
    "<|bos|> is plain text here",
    "ﬁ ligature and ｆｕｌｌ width",
    "\x00\x7f",
]
for s in awkward:
    assert tokenizer.decode(tokenizer.encode(s)) == s, s
assert tokenizer.encode("") == []
assert tokenizer.bos_id not in tokenizer.encode("<|bos|>")  # specials are never parsed from text
snowman = tokenizer.encode("☃")
assert tokenizer.decode_bytes(snowman) == "☃".encode()
pieces = [tokenizer.decode([i]) for i in snowman]
print("one id at a time:", pieces, "→ all together:", tokenizer.decode(snowman))
print(f"all {len(awkward)} awkward strings round-trip")

# %% [markdown]
# ## Compression: bytes per token
#
# Compression is what the tokenizer buys: more bytes per token means shorter sequences, so a model
# of fixed context sees more text and a fixed compute budget trains on more of it. We train a
# tokenizer for each vocabulary size with each split rule on the same slice of training text and
# measure bytes per token on the **held-out** split.

# %%
val_docs = list(iter_texts(run.p.data, "val", max_chars=2_000_000))
sweep_text = list(
    iter_texts(run.p.data, "train", max_chars=run.p.sweep_max_chars, doc_cap=run.p.doc_cap)
)
rows = []
for name, pattern in SPLIT_PATTERNS.items():
    for v in run.p.sweep_vocab_sizes:
        tok = Tokenizer.train(sweep_text, v, pattern=pattern)
        if tok.vocab_size != v:
            raise RuntimeError(
                f"the sweep's {v:,}-id tokenizer has {tok.vocab_size:,} ids; raise sweep_max_chars"
            )
        row = {"split": name, "vocab_size": v, "bytes_per_token": bytes_per_token(tok, val_docs)}
        rows.append(row)
        run.log(event="compression", **row)
val_bytes = sum(len(d.encode()) for d in val_docs)
baselines = {"raw bytes": 1.0, "characters": val_bytes / sum(len(d) for d in val_docs)}
table = pd.DataFrame(rows).pivot(index="vocab_size", columns="split", values="bytes_per_token")
table.round(3)

# %%
published = pd.read_csv(run.book.root / "data/reference/tokenizer_compression.csv")
fig = figure("Compression on held-out text", "vocabulary size (ids)", "bytes per token", log_x=True)
for name in SPLIT_PATTERNS:
    fig.add_scatter(x=table.index, y=table[name], name=f"ours, {name} split", **OURS)
fwe = published.set_index("text").loc["fwe-val"]
fig.add_scatter(
    x=[50_257], y=[fwe.gpt2_bytes_per_token], name="GPT-2 on FineWeb-Edu (published)", **PUBLISHED
)
fig.add_scatter(
    x=[100_277], y=[fwe.gpt4_bytes_per_token], name="GPT-4 on FineWeb-Edu (published)", **PUBLISHED
)
for label, value in baselines.items():
    fig.add_hline(y=value, line_dash="dot", annotation_text=label)
fig.show()

# %%
per_doubling = table.diff().div(np.log2(table.index.to_series()).diff(), axis=0).dropna()
if len(per_doubling) >= 2:  # the claim below needs three vocabulary sizes
    expect((per_doubling > 0).all().all(), "a bigger vocabulary compresses better",
           preset=run.preset)  # fmt: skip
    expect((per_doubling.iloc[-1] < per_doubling.iloc[0]).all(),
           "each doubling of the vocabulary buys a smaller gain (for both splits)",
           preset=run.preset)  # fmt: skip
per_doubling.rename_axis("gain per doubling, up to vocab").round(3)

# %% [markdown]
# What to look at: each doubling of the vocabulary buys a smaller gain — the curve bends over.
# The two split rules differ most where text has digits and punctuation runs: GPT-4's rule never
# merges more than three digits and keeps punctuation apart from letters, which costs little on
# prose and helps on numbers and code. The published points are on web text with 12–25× larger
# vocabularies, so read them as the far end of our curve, not as a like-for-like comparison.

# %%
at = max(run.p.sweep_vocab_sizes)
gain = table.loc[at, "gpt4"] / table.loc[at, "gpt2"] - 1
print(f"at vocab {at:,} the GPT-4 split gives {gain:+.1%} bytes per token vs GPT-2's on our text")

# %% [markdown]
# nanochat's table of GPT-2 and GPT-4 bytes per token on five kinds of text
# (`data/reference/tokenizer_compression.csv`, with its source):

# %%
published

# %% [markdown]
# ## Speed
#
# `tiktoken` encodes with the learned ranks in Rust, on several threads for a batch. Measure it on
# the held-out text (the bench in `bench/tokenizer.py` compares it with HF `tokenizers`):

# %%
t0 = time.time()
encoded = tokenizer.encode_batch(val_docs, prepend="<|bos|>")
encode_s = time.time() - t0
val_bpt = val_bytes / sum(len(ids) - 1 for ids in encoded)
print(
    f"{val_bytes / 1e6:.2f} MB in {encode_s:.2f} s = {val_bytes / 1e6 / encode_s:.1f} MB/s; "
    f"{val_bpt:.3f} bytes per token at vocab {tokenizer.vocab_size:,}"
)

# %%
run.finish(
    headline={
        "vocab_size": tokenizer.vocab_size,
        "train_time_s": round(train_time_s, 2),
        "val_bytes_per_token": round(val_bpt, 3),
        "encode_MB_per_s": round(val_bytes / 1e6 / encode_s, 1),
    }
)

# %% [markdown]
# ## Summary
#
# - BPE starts from the 256 bytes and greedily merges the most frequent adjacent pair; the split
#   regex keeps merges inside words, numbers and punctuation runs.
# - Our tokenizer is trained by `rustbpe` and served by `tiktoken`; the teaching version above
#   learns the same merges, one by one.
# - Bigger vocabularies compress better with diminishing returns; the model pays for them in
#   embedding and output-head parameters (chapter 2 counts them).
#
# **Exercises**
# 1. Set `vocab_size = 1024` in the parameters cell and re-run: how much longer do held-out texts
#    get? Predict first from the compression plot.
# 2. Change the GPT-4 split to group digits in ones (`\p{N}{1,1}`) and measure compression on a
#    text full of numbers. nanochat found `{1,2}` best for its model; why might a *worse*
#    compression give a *better* model?
# 3. Give `teach_bpe` a `Counter` of pairs that it updates incrementally instead of recounting
#    after each merge. How much faster is it on 1 MB?
#
# **Further reading**: Sennrich et al. 2016, *Neural Machine Translation of Rare Words with
# Subword Units*; Radford et al. 2019 (GPT-2) §2.2 on byte-level BPE; Karpathy's `minbpe` and
# nanochat's `tokenizer.py` for production versions of the same idea.
