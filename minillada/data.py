"""Corpora, the tokenizer and synthetic long-context tasks.

- Corpus: the embedded default `stdlib` (this Python's standard-library sources and its pydoc
  topics: real documents, natural boundaries, lengths from a few hundred characters to
  hundreds of thousands), or a folder of `.txt` files, or a `.jsonl` file with a `text` field.
  `split_corpus` assigns each document to train / validation / test by a hash of its text, so
  the split does not depend on file order or Python version.
- Tokenizer: byte-level BPE trained with `tokenizers` on the training split, every digit its own
  pre-token (a 5-digit key is 5 tokens), special tokens `<|mask|> <|eod|> <|pad|> <|bos|>`;
  trained once and cached under `$MINILLADA_CACHE/tokenizers`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# ---------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------

STDLIB = "stdlib"
# Test suites, the IDE, demos, vendored wheels, codec tables and build data: not the library's
# own prose and code, and (codecs) long runs of repetitive tables.
_STDLIB_SKIPPED_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "__pycache__",
    "lib-dynload", "ensurepip", "encodings", "__phello__",
})
_STDLIB_SKIPPED_PREFIXES = ("test_", "_sysconfigdata")
# pydoc_data/topics.py is the pydoc topics as one Python literal; they join the corpus one
# topic per document instead.
_STDLIB_SKIPPED_FILES = frozenset({"pydoc_data/topics.py"})
# Package markers and stubs below this size are boilerplate, not documents.
MIN_STDLIB_CHARS = 200


def load_corpus(source: str | os.PathLike = STDLIB) -> list[str]:
    """The documents of `source`, in a deterministic order.

    `source` is `"stdlib"` (sources sorted by relative path, then pydoc topics sorted by name),
    a folder of `.txt` files (searched recursively, sorted by relative path) or a `.jsonl` file
    whose lines are objects with a string `text` (file order). Blank documents are dropped.
    Raises FileNotFoundError for a missing path, ValueError for an unsupported file or a source
    without any non-blank document.
    """
    if str(source) == STDLIB:
        docs = _stdlib_documents()
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"corpus path {str(path)!r} does not exist")
        if path.is_dir():
            docs = [p.read_text(encoding="utf-8") for p in sorted(path.rglob("*.txt"))]
        elif path.suffix == ".jsonl":
            docs = _jsonl_texts(path)
        else:
            raise ValueError(f"corpus file {str(path)!r} is not a .jsonl file; give 'stdlib', "
                             "a folder of .txt files or a .jsonl file with a 'text' field")
    docs = [doc for doc in docs if doc.strip()]
    if not docs:
        raise ValueError(f"corpus {str(source)!r} holds no non-blank document")
    return docs


def _stdlib_documents() -> list[str]:
    import pydoc_data.topics  # the pydoc help topics that ship with every CPython

    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _STDLIB_SKIPPED_DIRS and not d.startswith("config-")]
        for name in files:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if (name.endswith(".py") and not name.startswith(_STDLIB_SKIPPED_PREFIXES)
                    and relative not in _STDLIB_SKIPPED_FILES):
                sources.append((relative, path))
    texts = [path.read_text(encoding="utf-8") for _, path in sorted(sources)]
    topics = pydoc_data.topics.topics
    return [text for text in texts if len(text) >= MIN_STDLIB_CHARS] + [
        topics[name] for name in sorted(topics)
    ]


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{number}: expected an object with a string 'text' field")
            texts.append(record["text"])
    return texts


class CorpusSplit(NamedTuple):
    """Documents of each split, in corpus order."""

    train: list[str]
    validation: list[str]
    test: list[str]


def split_corpus(docs: Sequence[str], seed: int = 0, validation: float = 0.05,
                 test: float = 0.05) -> CorpusSplit:
    """Split documents by u = sha256(seed, text) mapped to [0, 1): test if u < `test`,
    validation if u < `test + validation`, train otherwise. Identical texts share a split."""
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError(f"validation={validation} and test={test} must be >= 0 with sum < 1")
    split = CorpusSplit([], [], [])
    for doc in docs:
        u = _unit_hash(f"{seed}\0{doc}")
        if u < test:
            split.test.append(doc)
        elif u < test + validation:
            split.validation.append(doc)
        else:
            split.train.append(doc)
    return split


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

SPECIAL_TOKENS = {"mask_token": "<|mask|>", "eod_token": "<|eod|>", "pad_token": "<|pad|>",
                  "bos_token": "<|bos|>"}
# Bump when the tokenizer's rules change, so cached tokenizers are retrained.
TOKENIZER_VERSION = 1
# BPE is trained on at most this many characters of the training split (an even subsample of its
# documents, for large user corpora): the whole stdlib split (8M characters) takes about 1 s.
TOKENIZER_TRAIN_CHARS = 16_000_000
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def cache_dir() -> Path:
    """`$MINILLADA_CACHE`, default `~/.cache/minillada`."""
    return Path(os.environ.get("MINILLADA_CACHE", Path.home() / ".cache" / "minillada"))


def get_tokenizer(vocab_size: int, corpus: str | os.PathLike = STDLIB,
                  split_seed: int = 0) -> PreTrainedTokenizerFast:
    """The byte-level BPE tokenizer of `vocab_size` trained on the training split of `corpus`.

    Cached under `$MINILLADA_CACHE/tokenizers/<corpus hash>-v<version>-<vocab_size>` (the hash
    covers the training texts, so an edited corpus retrains); written atomically, so concurrent
    callers never see a half-written tokenizer. `len(tokenizer)` may fall short of `vocab_size`
    on a corpus too small to learn that many merges.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an integer >= {MIN_VOCAB_SIZE} (256 bytes + "
                         f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size!r}")
    texts = _tokenizer_training_texts(split_corpus(load_corpus(corpus), seed=split_seed).train)
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / f"{digest}-v{TOKENIZER_VERSION}-{vocab_size}"
    if not (folder / "tokenizer.json").is_file():
        temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        train_tokenizer(texts, vocab_size).save_pretrained(temporary)
        try:
            os.replace(temporary, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(temporary, ignore_errors=True)
    return load_tokenizer(folder)


def _tokenizer_training_texts(docs: list[str]) -> list[str]:
    """Every k-th document, k chosen so that about TOKENIZER_TRAIN_CHARS characters remain."""
    total = sum(len(doc) for doc in docs)
    stride = max(1, -(-total // TOKENIZER_TRAIN_CHARS))
    return docs[::stride]


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` (no normalization, lossless round trip); special tokens
    take ids 0-3 in the order of SPECIAL_TOKENS."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **_special_token_kwargs())


def _special_token_kwargs() -> dict:
    # `eod` doubles as the EOS token; the named extra token also gives `tokenizer.eod_token_id`.
    return dict(mask_token=SPECIAL_TOKENS["mask_token"], pad_token=SPECIAL_TOKENS["pad_token"],
                bos_token=SPECIAL_TOKENS["bos_token"], eos_token=SPECIAL_TOKENS["eod_token"],
                extra_special_tokens={"eod_token": SPECIAL_TOKENS["eod_token"]})


def load_tokenizer(folder: str | os.PathLike,
                   vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `save_pretrained` (e.g. next to a checkpoint); with
    `vocab_size`, check that it fits a model of that vocabulary."""
    path = Path(folder)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(path)!r}")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    missing = [token for token in SPECIAL_TOKENS.values()
               if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"tokenizer in {str(path)!r} lacks special tokens {missing}")
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer in {str(path)!r} has {len(tokenizer)} tokens, more than "
                         f"vocab_size={vocab_size}")
    return tokenizer


def tokenize_documents(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str]) -> list[list[int]]:
    """Token ids of each document, without special tokens (packing adds separators)."""
    return tokenizer(list(docs), add_special_tokens=False)["input_ids"]
