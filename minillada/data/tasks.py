"""Synthetic long-context tasks (`TASKS`): passkey retrieval, single- and multi-key needle in a
haystack, variable tracking. `make_task_sample` builds a `TaskSample` of exactly the requested
number of tokens, deterministic from its seed, with keys of a `data.keys.KeySpace`; haystacks
come from `data.corpus` corpora. `sample_maker` is the one way every caller (the trainer's task
rows, the study's and the command line's retrieval grids) builds samples: the keys and the
haystack's corpus split fixed, `make_sample(task, length, depth, seed)` left.
"""

from __future__ import annotations

import functools
import itertools
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from minillada.common.names import HAYSTACK_TASKS, STDLIB
from minillada.data.corpus import CorpusSplit, load_corpus, split_corpus, tokenize_documents
from minillada.data.keys import KeySpace, key_space

# Every prompt is filler with needle(s) inserted at filler-unit boundaries, then the question;
# the answer follows the prompt. Prompts that end in "is " put the space token before the
# digits (digits are pre-tokenized alone), so prompt + answer tokenize as the joined text would.
NOISE_SENTENCES = (" The grass is green.", " The sky is blue.", " The sun is yellow.",
                   " Here we go.", " There and back again.")
PASSKEY_NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = " What is the pass key? The pass key is "
NIAH_NEEDLE = "The special magic {noun} for {word} is {key}.\n"
NIAH_QUESTION = ("\nWhat is the special magic {noun} for {word}? "
                 "The special magic {noun} for {word} is ")
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


def passkey(tokenizer, rng: random.Random, depth: float, key_space: KeySpace) -> TaskSpec:
    """Passkey retrieval (Landmark Attention / YaRN): a key hidden in repeated noise."""
    key = key_space.draw(rng)
    return TaskSpec(needles=[PASSKEY_NEEDLE.format(key=key)], needle_depths=[depth],
                    question=key_space.question(PASSKEY_QUESTION), answer_text=key,
                    answer_prefix=key_space.answer_prefix, filler=noise_filler(tokenizer),
                    metadata={"key": key})


def niah(tokenizer, rng: random.Random, depth: float, key_space: KeySpace, keys: int = 1,
         haystack: str = STDLIB, haystack_split: str = "test", haystack_split_seed: int = 0,
         word: str | None = None) -> TaskSpec:
    """Needle in a haystack of held-out corpus lines (RULER niah_single / niah_multikey): `keys`
    needles "The special magic number for <word> is <key>." with distinct words; the first is
    queried and sits at `depth`, the others at random depths. The haystack is the
    `haystack_split` split (under `haystack_split_seed`) of the corpus `haystack`; `word` fixes
    the queried word (the draws are the same either way)."""
    if not 1 <= keys <= len(NIAH_WORDS):
        raise ValueError(f"keys must be in [1, {len(NIAH_WORDS)}], got {keys}")
    if word is not None and word not in NIAH_WORDS:
        raise ValueError(f"word must be one of NIAH_WORDS, got {word!r}")
    words = rng.sample(NIAH_WORDS, keys)
    if word is not None:  # the queried word replaced; an unqueried copy of it by an unused one
        spare = next(w for w in NIAH_WORDS if w not in words and w != word)
        words = [word, *(spare if w == word else w for w in words[1:])]
    numbers = [key_space.draw(rng) for _ in words]
    filler = corpus_filler(tokenizer, haystack, haystack_split, haystack_split_seed)
    noun = key_space.noun
    return TaskSpec(
        needles=[NIAH_NEEDLE.format(noun=noun, word=w, key=n)
                 for w, n in zip(words, numbers, strict=True)],
        needle_depths=[depth] + [rng.uniform(0, 100) for _ in words[1:]],
        question=key_space.question(NIAH_QUESTION.format(noun=noun, word=words[0])),
        answer_text=numbers[0], answer_prefix=key_space.answer_prefix, filler=filler,
        filler_start=filler.random_start(rng),
        metadata={"key": numbers[0], "word": words[0], "words": words, "keys": numbers},
    )


def variable_tracking(tokenizer, rng: random.Random, depth: float, key_space: KeySpace,
                      hops: int = 4) -> TaskSpec:
    """RULER variable tracking: "VAR A = 12345." then `hops` statements "VAR B = A." ... spread
    evenly from `depth` towards the end of repeated noise; the answer lists every variable
    holding the value, in chain order."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    value = key_space.draw(rng)
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


def haystack_params(task: str, corpus: str, split: str, split_seed: int) -> dict[str, Any]:
    """The builder parameters that put `task`'s haystack in `split` of `corpus` (NIAH tasks; the
    others take no haystack)."""
    return ({"haystack": corpus, "haystack_split": split, "haystack_split_seed": split_seed}
            if task in HAYSTACK_TASKS else {})


def _task_parts(tokenizer, task: str, depth: float | None, seed: int, keys: KeySpace,
                params: dict[str, Any]) -> tuple[float, TaskSpec, list[list[int]], list[int],
                                                 list[int]]:
    """The depth, the builder's spec and the token ids of needles, question and answer."""
    rng = random.Random(seed)
    depth = rng.uniform(0, 100) if depth is None else float(depth)
    spec = TASKS[task](tokenizer, rng, depth, keys, **params)
    needles = [_encode(tokenizer, text) for text in spec.needles]
    question = _encode(tokenizer, spec.question)
    answer = _encode(tokenizer, spec.answer_prefix + spec.answer_text)
    return depth, spec, needles, question, answer


def min_task_length(tokenizer: PreTrainedTokenizerFast, task: str, key_digits: int = 5,
                    seeds: Sequence[int] = range(16), key_kind: str = "number",
                    **params: Any) -> int:
    """The shortest length that holds the needles, question and answer of `task` for every one of
    `seeds` (needle words and names vary with the seed)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    keys = key_space(tokenizer, key_kind, key_digits)
    return max(sum(map(len, needles)) + len(question) + len(answer)
               for _, _, needles, question, answer in
               (_task_parts(tokenizer, task, 50.0, seed, keys, params) for seed in seeds))


def make_task_sample(tokenizer: PreTrainedTokenizerFast, task: str, length: int,
                     depth: float | None = None, seed: int = 0, *, key_digits: int = 5,
                     key_kind: str = "number", **params: Any) -> TaskSample:
    """A sample of `task` with exactly `length` tokens, deterministic from `seed`.

    `depth` (percent, default: uniform from the seed) places the queried needle after that share
    of the filler, snapped to the nearest filler-unit boundary (a noise repeat or a corpus line);
    `key_kind` and `key_digits` pick the keys (`key_space`); `params` go to the task builder
    (`keys` for `niah`, `hops` for `variable_tracking`, `haystack` / `haystack_split` for the
    NIAH corpus).
    Raises ValueError for an unknown task, a depth outside [0, 100], or a length too short for
    the needles, question and answer (naming the minimum).
    """
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError(f"tokenizer must be a Hugging Face tokenizer (minillada.data."
                         f"get_tokenizer or load_tokenizer), got {tokenizer!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    if depth is not None and not 0 <= depth <= 100:
        raise ValueError(f"depth must be a percentage in [0, 100], got {depth}")
    keys = key_space(tokenizer, key_kind, key_digits)
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    depth, spec, needles, question, answer = _task_parts(tokenizer, task, depth, seed,
                                                         keys, params)
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
    if "keys" in spec.metadata:  # every needle's key as answer tokens, the queried one first
        metadata["key_ids"] = [_encode(tokenizer, spec.answer_prefix + key)
                               for key in spec.metadata["keys"]]
    return TaskSample(task=task, prompt_ids=prompt, answer_ids=answer,
                      answer_text=spec.answer_text, length=len(prompt) + len(answer),
                      depth=depth, metadata=metadata)


def make_decoy_sample(tokenizer: PreTrainedTokenizerFast, task: str, length: int,
                      depth: float | None = None, seed: int = 0, *, decoys: int = 2,
                      key_digits: int = 5, key_kind: str = "number",
                      **params: Any) -> TaskSample:
    """Packed-context retrieval with decoy keys: `decoys` whole documents of `task`, each
    `length // (2 decoys)` tokens with its question answered, then the queried document (the
    rest of the `length` tokens, needle at `depth`). Every decoy asks about the queried word
    but holds another key, so only a model that keeps documents apart answers with the queried
    key; one that picks any of the keys about that word scores 100 / (decoys + 1) %.

    `metadata` adds `doc_lengths` (the documents' token counts, the queried one without its
    answer: how `evals.layout` lays the prompt out), `decoy_keys` and `distractor_ids` (the
    decoys' answer tokens); the needle spans are shifted to their place in the prompt. For
    `niah` and `niah_multikey` the decoys share the queried word; every `passkey` document asks
    the same question already."""
    builder = getattr(TASKS.get(task), "func", TASKS.get(task))
    if builder not in (niah, passkey):
        raise ValueError(f"decoy samples need a task with one queried key (passkey, niah, "
                         f"niah_multikey), got {task!r}")
    if not isinstance(decoys, int) or decoys < 1:
        raise ValueError(f"decoys must be a positive integer, got {decoys!r}")
    size = length // (2 * decoys)
    own = make_task_sample(tokenizer, task, length - decoys * size, depth, seed,
                           key_digits=key_digits, key_kind=key_kind, **params)
    rng = random.Random(seed)
    shared = {"word": own.metadata["word"]} if builder is niah else {}
    others: list[TaskSample] = []
    while len(others) < decoys:
        other = make_task_sample(tokenizer, task, size, None, rng.randrange(2**31),
                                 key_digits=key_digits, key_kind=key_kind,
                                 **{**params, **shared})
        if other.answer_text not in {own.answer_text, *(o.answer_text for o in others)}:
            others.append(other)
    offset = decoys * size
    shifted = {name: [offset + i for i in own.metadata[name]]
               for name in ("needle_starts", "needle_ends")}
    shifted.update({name: offset + own.metadata[name] for name in ("needle_start", "needle_end")
                    if name in own.metadata})
    metadata = dict(own.metadata, **shifted,
                    doc_lengths=[size] * decoys + [len(own.prompt_ids)],
                    decoy_keys=[o.answer_text for o in others],
                    distractor_ids=[list(o.answer_ids) for o in others])
    prompt = [token for other in others for token in other.input_ids] + own.prompt_ids
    return TaskSample(task=task, prompt_ids=prompt, answer_ids=own.answer_ids,
                      answer_text=own.answer_text, length=length, depth=own.depth,
                      metadata=metadata)


SampleMaker = Callable[[str, int, float | None, int], TaskSample]


def sample_maker(tokenizer: PreTrainedTokenizerFast, *, key_kind: str, key_digits: int,
                 corpus: str, split: str, split_seed: int, decoys: int = 0) -> SampleMaker:
    """`make_sample(task, length, depth, seed)`, the one way samples are built: for training
    rows, the study's retrieval grids and `minillada eval` alike. Keys of `key_kind` with
    `key_digits`; a NIAH haystack from `split` of `corpus` under `split_seed` (training rows read
    the train split, validation rows the validation split, evaluations the test split);
    `decoys` > 0: packed-context samples with that many decoy documents (`make_decoy_sample`)."""
    def make(task: str, length: int, depth: float | None, seed: int) -> TaskSample:
        params = {"key_digits": key_digits, "key_kind": key_kind,
                  **haystack_params(task, corpus, split, split_seed)}
        if decoys:
            return make_decoy_sample(tokenizer, task, length, depth, seed, decoys=decoys,
                                     **params)
        return make_task_sample(tokenizer, task, length, depth, seed, **params)
    return make
