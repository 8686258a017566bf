"""Corpora and the tokenizer.

- Corpus: the embedded default `stdlib` (this Python's standard-library sources and its pydoc
  topics: real documents, natural boundaries, lengths from a few hundred characters to
  hundreds of thousands), or a folder of `.txt` files, or a `.jsonl` file with a `text` field.
  `split_corpus` assigns each document to train / validation / test by a hash of its text, so
  the split does not depend on file order or Python version.
- Tokenizer: byte-level BPE trained with `tokenizers` on the training split, every digit its own
  pre-token (a 5-digit key is 5 tokens), special tokens `<|mask|> <|eod|> <|pad|> <|bos|>`;
  trained once and cached under `$MINILLADA_CACHE/tokenizers`.
- Tokenized documents (`tokenize_documents`, in batches). Whole splits are tokenized once and
  cached by `data.token_cache`; the synthetic long-context tasks built from these corpora live in
  `data.tasks`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from minillada.common.atomic import atomic_folder
from minillada.common.folders import cache_dir
from minillada.common.names import STDLIB

# ---------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------

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
    Files are read one at a time (a .jsonl file line by line), so the documents are the only copy
    of the corpus held. Raises FileNotFoundError for a missing path; ValueError for an unsupported
    file, a folder without .txt files, a file that is binary or not UTF-8 (naming it and the byte
    offset), a .jsonl line that is no object with a string "text" (naming file and line), or a
    source without any non-blank document.
    """
    if str(source) == STDLIB:
        texts: Iterator[str] = iter(_stdlib_documents())
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"corpus path {str(path)!r} does not exist")
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise ValueError(f"corpus folder {str(path)!r} holds no .txt files (searched "
                                 "recursively); give a folder of .txt files or a .jsonl file")
            texts = (_read_text(file) for file in files)
        elif path.suffix == ".jsonl":
            texts = _jsonl_texts(path)
        else:
            raise ValueError(f"corpus file {str(path)!r} is not a .jsonl file; give 'stdlib', "
                             "a folder of .txt files or a .jsonl file with a 'text' field")
    docs = [doc for doc in texts if doc.strip()]
    if not docs:
        raise ValueError(f"corpus {str(source)!r} holds no non-blank document")
    return docs


@functools.lru_cache(maxsize=4)
def corpus_fingerprint(source: str = STDLIB) -> str:
    """A short hash of the corpus's documents (the standard library differs between Python
    versions, so two machines may study different corpora): recorded with every claim."""
    sha = hashlib.sha256()
    for doc in load_corpus(source):
        sha.update(hashlib.sha256(doc.encode()).digest())
    return sha.hexdigest()[:16]


def corpus_digest(source: str | os.PathLike = STDLIB) -> str:
    """The sha256 of what the documents of `source` are read from: a .jsonl file's bytes, each
    .txt file of a folder (its path relative to the folder and its bytes), or the standard
    library's documents (`corpus_fingerprint`). What the token cache is keyed by: a corpus
    overwritten in place gets another digest."""
    if str(source) == STDLIB:
        return corpus_fingerprint(STDLIB)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"corpus path {str(path)!r} does not exist")
    if not path.is_dir():
        return file_sha256(path)
    sha = hashlib.sha256()
    for file in sorted(path.rglob("*.txt")):
        sha.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\0".encode())
    return sha.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read 16 MiB at a time; remembered per (path, size,
    modification time), so a process hashes an unchanged file once."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(16 << 20):
            sha.update(block)
    return sha.hexdigest()


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
    texts = [_read_text(path) for _, path in sorted(sources)]
    topics = pydoc_data.topics.topics
    return [text for text in texts if len(text) >= MIN_STDLIB_CHARS] + [
        topics[name] for name in sorted(topics)
    ]


def _read_text(path: Path) -> str:
    """A UTF-8 text file; ValueError naming the file and the byte offset of a NUL byte (a binary
    file) or of the first byte that is not UTF-8."""
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(f"corpus file {str(path)!r} is binary (a NUL byte at byte offset {nul}); "
                         "corpus files must be UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(_not_utf8(path, error, error.start)) from None


def _not_utf8(path: Path, error: UnicodeDecodeError, offset: int) -> str:
    bad = error.object[error.start:error.start + 1]
    return (f"corpus file {str(path)!r} is not UTF-8 text: byte {bad!r} at byte offset {offset} "
            f"({error.reason}); corpus files must be UTF-8")


def _jsonl_texts(path: Path) -> Iterator[str]:
    """The `text` of each non-blank line of a .jsonl file, read one line at a time."""
    offset = 0
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(_not_utf8(path, error, offset + error.start)
                                 + f" (line {number})") from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON value ({error.msg} at column "
                                 f"{error.colno}; a half-written line?); expected one object "
                                 'with a string "text" field per line') from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                found = (f"an object whose 'text' is {type(record['text']).__name__}"
                         if isinstance(record, dict) and "text" in record else
                         "an object without 'text'" if isinstance(record, dict) else
                         f"a JSON {type(record).__name__}")
                raise ValueError(f"{path}:{number}: expected an object with a string 'text' field, "
                                 f"got {found}")
            yield record["text"]


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
# Reserved key tokens for the synthetic retrieval tasks (`tasks.KeySpace` kind "token"): one
# vocabulary entry each, never produced by the corpus, like the reserved tokens of LLaDA's
# vocabulary. A vocabulary keeps up to this many, and at most half its room above the bytes.
KEY_TOKENS = 128
KEY_TOKEN_FORMAT = "<|key{:03d}|>"
# Bump when the tokenizer's rules change, so cached tokenizers are retrained.
TOKENIZER_VERSION = 2
# BPE is trained on at most this many characters of the training split (an even subsample of its
# documents, for large user corpora): the whole stdlib split (8M characters) takes about 1 s.
TOKENIZER_TRAIN_CHARS = 16_000_000
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


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
        with atomic_folder(folder, replace=False) as temporary:  # another process's copy stands
            train_tokenizer(texts, vocab_size).save_pretrained(temporary)
    return load_tokenizer(folder)


def _tokenizer_training_texts(docs: list[str]) -> list[str]:
    """Every k-th document, k chosen so that about TOKENIZER_TRAIN_CHARS characters remain."""
    total = sum(len(doc) for doc in docs)
    stride = max(1, -(-total // TOKENIZER_TRAIN_CHARS))
    return docs[::stride]


def key_token_count(vocab_size: int) -> int:
    """How many reserved key tokens a vocabulary of `vocab_size` holds."""
    return min(KEY_TOKENS, (vocab_size - MIN_VOCAB_SIZE) // 2)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` (no normalization, lossless round trip); special tokens
    take ids 0-3 in the order of SPECIAL_TOKENS, the `key_token_count` key tokens the last ids
    (plain added tokens: decoding keeps them)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    backend.decoder = decoders.ByteLevel()
    keys = key_token_count(vocab_size)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - keys, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **_special_token_kwargs())
    tokenizer.add_tokens([KEY_TOKEN_FORMAT.format(i) for i in range(keys)])
    return tokenizer


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
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {str(path)!r} does not exist (or is no folder)")
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(path)!r}: a tokenizer folder holds "
                                "the tokenizer.json that save_pretrained writes")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    missing = [token for token in SPECIAL_TOKENS.values()
               if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"tokenizer in {str(path)!r} lacks special tokens {missing}")
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer in {str(path)!r} has {len(tokenizer)} tokens, more than "
                         f"vocab_size={vocab_size}")
    return tokenizer


# Documents tokenized per call of the tokenizer; more documents than this also show progress.
TOKENIZE_BATCH = 1000


def tokenize_documents(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str],
                       progress: bool | None = None) -> list[list[int]]:
    """Token ids of each document, without special tokens (packing adds separators).

    Documents go to the tokenizer in batches of TOKENIZE_BATCH; a progress bar (on stderr) shows
    with `progress=True`, or by default when there are more than TOKENIZE_BATCH documents.
    """
    return list(itertools.chain.from_iterable(tokenized_batches(tokenizer, docs, progress)))


def tokenized_batches(tokenizer: PreTrainedTokenizerFast, docs: Sequence[str],
                      progress: bool | None = None,
                      desc: str = "tokenizing") -> Iterator[list[list[int]]]:
    """`tokenize_documents`, one batch of TOKENIZE_BATCH documents at a time (the progress bar
    titled `desc`)."""
    if progress is None:
        progress = len(docs) > TOKENIZE_BATCH
    with tqdm(total=len(docs), desc=desc, unit="doc", disable=not progress) as bar:
        for start in range(0, len(docs), TOKENIZE_BATCH):
            batch = list(docs[start:start + TOKENIZE_BATCH])
            yield tokenizer(batch, add_special_tokens=False)["input_ids"]
            bar.update(len(batch))
