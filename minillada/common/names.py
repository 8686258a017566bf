"""The names every layer checks input against, in one torch-free place.

`training.config` validates a TrainConfig against them, the command line offers them as choices
and refuses anything else before torch loads, and each registry that implements them imports
them from here; tests/test_bad_input.py keeps every list equal to its registry.
"""

from __future__ import annotations

STAGES = ("pretrain", "extend")  # a run: pre-train at T_train, or extend an init to seq_len
# The synthetic retrieval tasks (`data.tasks.TASKS`); a haystack task hides its needles in a
# corpus split, the others in repeated noise; a key task's answer is one key.
TASK_NAMES = ("passkey", "niah", "niah_multikey", "variable_tracking")
HAYSTACK_TASKS = ("niah", "niah_multikey")
KEY_TASKS = ("passkey", *HAYSTACK_TASKS)
KEY_KINDS = ("number", "word", "token", "code")  # retrieval keys (`data.keys.KeySpace`)
PACKING_NAMES = ("direct", "eod", "adaptive", "adaptive_eod")  # `data.packing`'s strategies
ATTENTION_BACKEND_NAMES = ("per_document", "dense", "flex")  # `modeling.attention`'s backends
T_PER = ("sequence", "document")  # the forward process draws t per row or per packed document
# A run's dtype: `auto` resolves per machine to one of the others (`training.precision`).
DTYPE_NAMES = ("auto", "float32", "bfloat16")
STDLIB = "stdlib"  # the embedded default corpus (`data.corpus.load_corpus`)
