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

# %% tags=["parameters"]
preset = "tiny"
data = None
vocab_size = None
max_chars = None
doc_cap = None
sweep_vocab_sizes = None
sweep_max_chars = None
seed = None
run_dir = None

# %%
from nanolib.runs import start_chapter

run = start_chapter("01_tokenizer", preset, globals())
print(run.summary())

# %%
run.finish(headline={})
