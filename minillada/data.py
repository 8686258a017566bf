"""Corpora, the tokenizer and synthetic long-context tasks.

- Corpus: the embedded default `stdlib` (this Python's standard-library sources and its pydoc
  topics: real documents, natural boundaries, lengths from a few hundred characters to
  hundreds of thousands), or a folder of `.txt` files, or a `.jsonl` file with a `text` field.
  `split_corpus` assigns each document to train / validation / test by a hash of its text, so
  the split does not depend on file order or Python version.
- Tokenizer: byte-level BPE trained with `tokenizers` on the training split, every digit its own
  pre-token (a 5-digit key is 5 tokens), special tokens `<|mask|> <|eod|> <|pad|> <|bos|>`;
  trained once and cached under `$MINILLADA_CACHE/tokenizers`.
- Synthetic long-context tasks (`TASKS`): passkey retrieval, single- and multi-key needle in a
  haystack, variable tracking; `make_task_sample` builds a `TaskSample` of exactly the requested
  number of tokens, deterministic from its seed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import random
import string
import sysconfig
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from minillada.atomic import atomic_folder

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
        with atomic_folder(folder, replace=False) as temporary:  # another process's copy stands
            train_tokenizer(texts, vocab_size).save_pretrained(temporary)
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
    if progress is None:
        progress = len(docs) > TOKENIZE_BATCH
    ids: list[list[int]] = []
    with tqdm(total=len(docs), desc="tokenizing", unit="doc", disable=not progress) as bar:
        for start in range(0, len(docs), TOKENIZE_BATCH):
            batch = list(docs[start:start + TOKENIZE_BATCH])
            ids += tokenizer(batch, add_special_tokens=False)["input_ids"]
            bar.update(len(batch))
    return ids


# ---------------------------------------------------------------------------------------------
# Synthetic long-context tasks
# ---------------------------------------------------------------------------------------------

# Every prompt is filler with needle(s) inserted at filler-unit boundaries, then the question;
# the answer follows the prompt. Prompts that end in "is " put the space token before the
# digits (digits are pre-tokenized alone), so prompt + answer tokenize as the joined text would.
NOISE_SENTENCES = (" The grass is green.", " The sky is blue.", " The sun is yellow.",
                   " Here we go.", " There and back again.")
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is "
NIAH_NEEDLE = "The special magic number for {word} is {key}.\n"
NIAH_QUESTION = ("\nWhat is the special magic number for {word}? "
                 "The special magic number for {word} is ")
VARIABLE_STATEMENT = " VAR {name} = {value}."
VARIABLE_QUESTION = (" Find all variables that are assigned the value {value} in the text above."
                     " Answer:")
# Keys of the NIAH needles: plain words, one picked per needle.
NIAH_WORDS = (
    "apple", "river", "violet", "candle", "harbor", "falcon", "meadow", "copper", "lantern",
    "orchid", "glacier", "pepper", "saddle", "thunder", "walnut", "compass", "marble", "beacon",
    "cedar", "dolphin", "ember", "fjord", "garnet", "hazel", "ivory", "jasper", "kettle",
    "lemon", "maple", "nectar", "onyx", "pebble", "quartz", "raven", "silver", "tulip",
)


@dataclass(frozen=True)
class TaskSample:
    """One synthetic sample: `prompt_ids + answer_ids` is exactly `length` tokens.

    `depth` is the requested depth (percent of the filler before the queried needle; for
    variable tracking, before the first statement of the chain). `metadata` holds the needles'
    token spans (`needle_starts`, `needle_ends`; for a single queried needle also
    `needle_start`, `needle_end`), `needle_depth` (the achieved depth), `filler_tokens`, `seed`
    and the task's keys and values.
    """

    task: str
    prompt_ids: list[int]
    answer_ids: list[int]
    answer_text: str
    length: int
    depth: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_ids(self) -> list[int]:
        """The full row, prompt then answer (for mixing into pre-training)."""
        return [*self.prompt_ids, *self.answer_ids]

    @property
    def answer_mask(self) -> list[bool]:
        """True at answer tokens: the `maskable` mask of answer-only (SFT-style) rows."""
        return [False] * len(self.prompt_ids) + [True] * len(self.answer_ids)


@dataclass(frozen=True)
class Filler:
    """A token stream read cyclically, and where its units (sentences, lines) start."""

    tokens: np.ndarray  # int64 [n]
    unit_start: np.ndarray  # bool [n]: a unit starts at this token

    def take(self, start: int, count: int) -> tuple[list[int], np.ndarray]:
        """`count` tokens from `start` (wrapping around), and the offsets in [0, count] where
        a needle may go: unit starts, the beginning and the end."""
        positions = (start + np.arange(count + 1)) % len(self.tokens)
        boundaries = np.flatnonzero(self.unit_start[positions])
        boundaries = np.union1d(boundaries, [0, count])
        return self.tokens[positions[:count]].tolist(), boundaries

    def random_start(self, rng: random.Random) -> int:
        return int(rng.choice(np.flatnonzero(self.unit_start)))


@dataclass(frozen=True)
class TaskSpec:
    """What a task builder decides for one sample; `make_task_sample` lays it out.

    `needles[i]` goes at `needle_depths[i]` percent of the filler; needle 0 is the queried one
    when `single_needle`. The answer text is tokenized as `answer_prefix + answer_text`.
    """

    needles: list[str]
    needle_depths: list[float]
    question: str
    answer_text: str
    filler: Filler
    filler_start: int = 0
    answer_prefix: str = ""
    single_needle: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


TaskBuilder = Callable[..., TaskSpec]


def _encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@functools.lru_cache(maxsize=8)
def noise_filler(tokenizer: PreTrainedTokenizerFast) -> Filler:
    """The passkey / RULER noise sentences repeated; each sentence is one unit."""
    sentences = [_encode(tokenizer, sentence) for sentence in NOISE_SENTENCES]
    tokens = np.array([t for sentence in sentences for t in sentence], dtype=np.int64)
    unit_start = np.zeros(len(tokens), dtype=bool)
    unit_start[np.cumsum([0] + [len(sentence) for sentence in sentences[:-1]])] = True
    return Filler(tokens, unit_start)


@functools.lru_cache(maxsize=8)
def corpus_filler(tokenizer: PreTrainedTokenizerFast, corpus: str = STDLIB,
                  split: str = "test", split_seed: int = 0) -> Filler:
    """The documents of one split of `corpus` joined, each tokenized whole; units are lines
    (a unit starts after every token holding a newline, and at every document start)."""
    if split not in CorpusSplit._fields:
        raise ValueError(f"unknown split {split!r}; choose one of {CorpusSplit._fields}")
    parts = split_corpus(load_corpus(corpus), seed=split_seed)
    docs = tokenize_documents(tokenizer, getattr(parts, split))
    tokens = np.array([t for doc in docs for t in doc], dtype=np.int64)
    if len(tokens) == 0:
        raise ValueError(f"the {split} split of corpus {corpus!r} is empty")
    holds_newline = np.array(["\n" in tokenizer.decode([i]) for i in range(len(tokenizer))])
    unit_start = np.zeros(len(tokens), dtype=bool)
    unit_start[1:] = holds_newline[tokens[:-1]]
    unit_start[np.cumsum([0] + [len(doc) for doc in docs[:-1]])] = True
    return Filler(tokens, unit_start)


def _random_key(rng: random.Random, digits: int) -> str:
    """A `digits`-digit number without a leading zero."""
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def passkey(tokenizer, rng: random.Random, depth: float, key_digits: int) -> TaskSpec:
    """Passkey retrieval (Landmark Attention / YaRN): a number hidden in repeated noise."""
    key = _random_key(rng, key_digits)
    return TaskSpec(needles=[PASSKEY_NEEDLE.format(key=key)], needle_depths=[depth],
                    question=PASSKEY_QUESTION, answer_text=key, filler=noise_filler(tokenizer),
                    metadata={"key": key})


def niah(tokenizer, rng: random.Random, depth: float, key_digits: int, keys: int = 1,
         haystack: str = STDLIB, haystack_split: str = "test",
         haystack_split_seed: int = 0) -> TaskSpec:
    """Needle in a haystack of held-out corpus lines (RULER niah_single / niah_multikey): `keys`
    needles "The special magic number for <word> is <number>." with distinct words; the first is
    queried and sits at `depth`, the others at random depths. The haystack is the
    `haystack_split` split (under `haystack_split_seed`) of the corpus `haystack`."""
    if not 1 <= keys <= len(NIAH_WORDS):
        raise ValueError(f"keys must be in [1, {len(NIAH_WORDS)}], got {keys}")
    words = rng.sample(NIAH_WORDS, keys)
    numbers = [_random_key(rng, key_digits) for _ in words]
    filler = corpus_filler(tokenizer, haystack, haystack_split, haystack_split_seed)
    return TaskSpec(
        needles=[NIAH_NEEDLE.format(word=w, key=n) for w, n in zip(words, numbers, strict=True)],
        needle_depths=[depth] + [rng.uniform(0, 100) for _ in words[1:]],
        question=NIAH_QUESTION.format(word=words[0]), answer_text=numbers[0], filler=filler,
        filler_start=filler.random_start(rng),
        metadata={"key": numbers[0], "word": words[0], "words": words, "keys": numbers},
    )


def variable_tracking(tokenizer, rng: random.Random, depth: float, key_digits: int,
                      hops: int = 4) -> TaskSpec:
    """RULER variable tracking: "VAR A = 12345." then `hops` statements "VAR B = A." ... spread
    evenly from `depth` towards the end of repeated noise; the answer lists every variable
    holding the value, in chain order."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    value = _random_key(rng, key_digits)
    names: list[str] = []
    while len(names) < hops + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in names:
            names.append(name)
    statements = [VARIABLE_STATEMENT.format(name=names[0], value=value)] + [
        VARIABLE_STATEMENT.format(name=name, value=previous)
        for previous, name in itertools.pairwise(names)
    ]
    return TaskSpec(
        needles=statements,
        needle_depths=[depth + (100 - depth) * i / len(names) for i in range(len(names))],
        question=VARIABLE_QUESTION.format(value=value), answer_text=" ".join(names),
        answer_prefix=" ", filler=noise_filler(tokenizer), single_needle=False,
        metadata={"key": value, "names": names},
    )


TASKS: dict[str, TaskBuilder] = {
    "passkey": passkey,
    "niah": niah,
    "niah_multikey": functools.partial(niah, keys=4),
    "variable_tracking": variable_tracking,
}


def _task_parts(tokenizer, task: str, depth: float | None, seed: int, key_digits: int,
                params: dict[str, Any]) -> tuple[float, TaskSpec, list[list[int]], list[int],
                                                 list[int]]:
    """The depth, the builder's spec and the token ids of needles, question and answer."""
    rng = random.Random(seed)
    depth = rng.uniform(0, 100) if depth is None else float(depth)
    spec = TASKS[task](tokenizer, rng, depth, key_digits, **params)
    needles = [_encode(tokenizer, text) for text in spec.needles]
    question = _encode(tokenizer, spec.question)
    answer = _encode(tokenizer, spec.answer_prefix + spec.answer_text)
    return depth, spec, needles, question, answer


def min_task_length(tokenizer: PreTrainedTokenizerFast, task: str, key_digits: int = 5,
                    seeds: Sequence[int] = range(16), **params: Any) -> int:
    """The shortest length that holds the needles, question and answer of `task` for every one of
    `seeds` (needle words and names vary with the seed)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    return max(sum(map(len, needles)) + len(question) + len(answer)
               for _, _, needles, question, answer in
               (_task_parts(tokenizer, task, 50.0, seed, key_digits, params) for seed in seeds))


def make_task_sample(tokenizer: PreTrainedTokenizerFast, task: str, length: int,
                     depth: float | None = None, seed: int = 0, *, key_digits: int = 5,
                     **params: Any) -> TaskSample:
    """A sample of `task` with exactly `length` tokens, deterministic from `seed`.

    `depth` (percent, default: uniform from the seed) places the queried needle after that share
    of the filler, snapped to the nearest filler-unit boundary (a noise repeat or a corpus line);
    `key_digits` sets the number's length; `params` go to the task builder (`keys` for
    `niah`, `hops` for `variable_tracking`, `haystack` / `haystack_split` for the NIAH corpus).
    Raises ValueError for an unknown task, a depth outside [0, 100], or a length too short for
    the needles, question and answer (naming the minimum).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    if depth is not None and not 0 <= depth <= 100:
        raise ValueError(f"depth must be a percentage in [0, 100], got {depth}")
    if not isinstance(key_digits, int) or key_digits < 1:
        raise ValueError(f"key_digits must be a positive integer, got {key_digits!r}")
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    depth, spec, needles, question, answer = _task_parts(tokenizer, task, depth, seed,
                                                         key_digits, params)
    minimum = sum(map(len, needles)) + len(question) + len(answer)
    if length < minimum:
        raise ValueError(f"length={length} is too short for task {task!r}: its needles, "
                         f"question and answer need at least {minimum} tokens")
    filler_length = int(length) - minimum
    filler, boundaries = spec.filler.take(spec.filler_start, filler_length)

    # Each needle goes to the unit boundary nearest its depth; ties in position keep needle order.
    slots = [int(boundaries[np.abs(boundaries - d / 100 * filler_length).argmin()])
             for d in spec.needle_depths]
    order = sorted(range(len(needles)), key=lambda i: slots[i])
    prompt: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    previous = 0
    for i in order:
        prompt += filler[previous:slots[i]]
        spans[i] = (len(prompt), len(prompt) + len(needles[i]))
        prompt += needles[i]
        previous = slots[i]
    prompt += filler[previous:] + question

    metadata = dict(
        spec.metadata, seed=seed, filler_tokens=filler_length,
        needle_starts=[spans[i][0] for i in range(len(needles))],
        needle_ends=[spans[i][1] for i in range(len(needles))],
        needle_depth=100 * slots[0] / filler_length if filler_length else depth,
    )
    if spec.single_needle:
        metadata.update(needle_start=spans[0][0], needle_end=spans[0][1])
    return TaskSample(task=task, prompt_ids=prompt, answer_ids=answer,
                      answer_text=spec.answer_text, length=len(prompt) + len(answer),
                      depth=depth, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Tokenized splits, cached
# ---------------------------------------------------------------------------------------------


def tokenized_split(tokenizer, corpus: str, split_seed: int, split: str) -> list[np.ndarray]:
    """The documents of one split (`train`, `validation` or `test`) of `corpus` as token arrays,
    tokenized once and cached under `$MINILLADA_CACHE/tokens` (keyed by corpus, split seed and
    the tokenizer's exact vocabulary and rules). Documents that tokenize to nothing are dropped."""
    if split not in CorpusSplit._fields:
        raise ValueError(f"unknown split {split!r}; choose one of {CorpusSplit._fields}")
    fingerprint = zlib.crc32(tokenizer.backend_tokenizer.to_str().encode())
    source = str(Path(corpus).resolve()) if corpus != STDLIB else corpus
    key = f"{zlib.crc32(source.encode()):08x}-{fingerprint:08x}-{split_seed}-{split}"
    folder = cache_dir() / "tokens" / key
    if not (folder / "offsets.npy").is_file():
        texts = getattr(split_corpus(load_corpus(corpus), seed=split_seed), split)
        docs = [doc for doc in tokenize_documents(tokenizer, texts) if doc]
        offsets = np.cumsum([0] + [len(doc) for doc in docs]).astype(np.int64)
        tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.int32, count=offsets[-1])
        with atomic_folder(folder) as temporary:
            np.save(temporary / "tokens.npy", tokens)
            np.save(temporary / "offsets.npy", offsets)
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    return [tokens[a:b] for a, b in itertools.pairwise(offsets)]


def split_documents(tokenizer, split: str = "test", corpus: str = STDLIB,
                    split_seed: int = 0) -> list[list[int]]:
    """Token ids of one corpus split's non-empty documents as lists (the test split is never
    trained on), from the `tokenized_split` cache."""
    return [doc.tolist() for doc in tokenized_split(tokenizer, corpus, split_seed, split)]
