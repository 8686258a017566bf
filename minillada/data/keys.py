"""Retrieval keys: what a needle hides and an answer names (`KeySpace`, made by `key_space`).

Keys are `number`s of k digits (digits are single tokens), `word`s (one vocabulary token: a space
and 4-12 lowercase letters, `key_words`), `token`s: the tokenizer's reserved key tokens
(`minillada.data.corpus.KEY_TOKENS`), which no corpus text contains, or `code`s: k-digit numbers
written in reserved key tokens, digit position i in its own ten tokens (`CODE_BASE`). Each key is
drawn uniformly, so an exact-match guess succeeds with probability 1 / `KeySpace.size` (the cpu
and gpu presets: 2-digit codes, 1 %; smoke: one-digit numbers, 10 %). A code digit is found by
its content alone, as a lone digit in noise is, whatever the haystack, and its position by which
ten it belongs to: no ordering to learn (docs/recipe.md). The keys a run trained on are in its
saved config (`trained_keys`).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerFast

from minillada.common.names import KEY_KINDS
from minillada.data.corpus import KEY_TOKEN_FORMAT, KEY_TOKENS

# Code keys: digit position i is written with key tokens [CODE_BASE * i, CODE_BASE * (i + 1)).
CODE_BASE = 10
_KEY_WORD = re.compile(r" [a-z]{4,12}")


@functools.lru_cache(maxsize=8)
def key_words(tokenizer: PreTrainedTokenizerFast) -> tuple[str, ...]:
    """Every vocabulary token that decodes to a space and 4-12 lowercase letters, by token id,
    without the space (each encodes back to that one token after a space)."""
    words = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if _KEY_WORD.fullmatch(text) and tokenizer.encode(
                text, add_special_tokens=False) == [token_id]:
            words.append(text[1:])
    return tuple(words)


@functools.lru_cache(maxsize=8)
def key_tokens(tokenizer: PreTrainedTokenizerFast) -> tuple[str, ...]:
    """The tokenizer's reserved key tokens (`minillada.data.corpus.KEY_TOKEN_FORMAT`), by id."""
    found = []
    for i in range(KEY_TOKENS):
        token = KEY_TOKEN_FORMAT.format(i)
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
            break
        found.append(token)
    return tuple(found)


@dataclass(frozen=True)
class KeySpace:
    """What a retrieval key is: a `digits`-digit number (leading zeros allowed), one of `words`
    (single tokens after a space, kinds `word` and `token`), or a `digits`-digit `code` whose
    digit i is one of `words[CODE_BASE * i:CODE_BASE * (i + 1)]`. `size` keys, drawn uniformly:
    exact-match chance 1 / size."""

    kind: str = "number"
    digits: int = 5
    words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {self.kind!r}; choose one of "
                             f"{', '.join(KEY_KINDS)}")
        if not isinstance(self.digits, int) or self.digits < 1:
            raise ValueError(f"key_digits must be a positive integer, got {self.digits!r}")
        if self.kind == "code" and len(self.words) < CODE_BASE * self.digits:
            raise ValueError(f"code keys of {self.digits} digits need {CODE_BASE * self.digits} "
                             f"reserved key tokens; the tokenizer has {len(self.words)} (a "
                             "vocabulary of V tokens holds min(128, (V - 260) // 2); one trained "
                             "before key tokens existed has none: retrain it)")
        if self.kind != "number" and len(self.words) < 2:
            raise ValueError(f"{self.kind} keys need at least 2 single-token {self.kind}s; the "
                             f"tokenizer has {len(self.words)} (a tokenizer trained before key "
                             "tokens existed has none: retrain it)")

    @property
    def size(self) -> int:
        if self.kind in ("number", "code"):
            return CODE_BASE**self.digits
        return len(self.words)

    @property
    def noun(self) -> str:
        return {"token": "word", "code": "number"}.get(self.kind, self.kind)

    def draw(self, rng: random.Random) -> str:
        if self.kind == "code":
            return "".join(rng.choice(self.words[CODE_BASE * i:CODE_BASE * (i + 1)])
                           for i in range(self.digits))
        if self.words:
            return rng.choice(self.words)
        return f"{rng.randrange(10**self.digits):0{self.digits}d}"

    def question(self, text: str) -> str:
        """A question ending in "is ": digits follow the space; a word token holds it."""
        return text.rstrip(" ") if self.kind == "word" else text

    @property
    def answer_prefix(self) -> str:
        return " " if self.kind == "word" else ""

    @property
    def slots(self) -> int:
        """Tokens in an answer: one per digit of a number or code, one for a word or token."""
        return self.digits if self.kind in ("number", "code") else 1

    def slot_token_ids(self, tokenizer: PreTrainedTokenizerFast) -> tuple[frozenset[int], ...]:
        """For each answer token, the token ids a key of this space may hold there: the ten
        digits (numbers), the ten reserved tokens of its position (codes), every key word or
        token (words, tokens). What a copier that cannot tell keys apart picks among
        (`evals.retrieval.copier_chance`)."""
        def ids(texts):
            return frozenset(tokenizer.convert_tokens_to_ids(list(texts))
                             if self.kind in ("token", "code") else
                             [tokenizer.encode(text, add_special_tokens=False)[0]
                              for text in texts])
        if self.kind == "number":
            return (ids(str(digit) for digit in range(CODE_BASE)),) * self.digits
        if self.kind == "code":
            return tuple(ids(self.words[CODE_BASE * i:CODE_BASE * (i + 1)])
                         for i in range(self.digits))
        return (ids(self.answer_prefix + word for word in self.words),)


def key_space(tokenizer: PreTrainedTokenizerFast, kind: str = "number",
              digits: int = 5) -> KeySpace:
    """The keys of `kind` for `tokenizer` (`key_words` or `key_tokens` of it)."""
    words = {"word": key_words, "token": key_tokens, "code": key_tokens}.get(
        kind, lambda _: ())(tokenizer)
    return KeySpace(kind, digits, words)


def trained_keys(saved: Mapping[str, Any]) -> tuple[str, int] | None:
    """The kind and digits of the keys a run's retrieval rows were trained with, from its saved
    TrainConfig (config.json); None when it trained on no retrieval task. The one place that
    reads them: the study's keys and `minillada eval`'s default keys."""
    if not saved.get("tasks") or "task_key_digits" not in saved:
        return None
    return str(saved.get("task_key_kind", "number")), int(saved["task_key_digits"])
