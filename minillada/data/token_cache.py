"""Tokenized corpus splits, cached on disk once per corpus, split seed and tokenizer.

`token_cache` writes one split's documents back to back (tokens.npy, int32, and offsets.npy)
under `$MINILLADA_CACHE/tokens`, a batch of documents at a time; `tokenized_split` reads them as
token arrays, `token_stream` memory-maps them (`TokenStream`: what `training.packed_corpus` packs
rows from on demand), `split_documents` gives lists (the evaluations' held-out documents).
"""

from __future__ import annotations

import itertools
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minillada.common.atomic import atomic_folder
from minillada.common.folders import cache_dir
from minillada.common.names import STDLIB
from minillada.data.corpus import CorpusSplit, load_corpus, split_corpus, tokenized_batches


class TokenStream(NamedTuple):
    """A split's documents back to back: `tokens` (int32, memory-mapped, read-only) and
    `offsets` (int64, D + 1): document d is tokens[offsets[d]:offsets[d + 1]]."""

    tokens: np.ndarray
    offsets: np.ndarray


def token_cache(tokenizer, corpus: str, split_seed: int, split: str) -> Path:
    """The cache folder of one split (`train`, `validation` or `test`) of `corpus` under
    `$MINILLADA_CACHE/tokens` (keyed by corpus, split seed and the tokenizer's exact vocabulary
    and rules): tokens.npy (int32, the documents back to back) and offsets.npy (int64), written
    once. Documents that tokenize to nothing are dropped. The tokens are written a batch of
    documents at a time, so the writer never holds the split's tokens as Python lists."""
    if split not in CorpusSplit._fields:
        raise ValueError(f"unknown split {split!r}; choose one of {CorpusSplit._fields}")
    fingerprint = zlib.crc32(tokenizer.backend_tokenizer.to_str().encode())
    source = str(Path(corpus).resolve()) if corpus != STDLIB else corpus
    key = f"{zlib.crc32(source.encode()):08x}-{fingerprint:08x}-{split_seed}-{split}"
    folder = cache_dir() / "tokens" / key
    if not (folder / "offsets.npy").is_file():
        texts = getattr(split_corpus(load_corpus(corpus), seed=split_seed), split)
        with atomic_folder(folder) as temporary:
            lengths = _write_token_array(tokenizer, texts, temporary / "tokens.npy")
            np.save(temporary / "offsets.npy", np.cumsum([0, *lengths]).astype(np.int64))
    return folder


def _write_token_array(tokenizer, texts: Sequence[str], path: Path) -> list[int]:
    """Write the non-empty documents' tokens as one int32 .npy array (np.save's bytes), one
    batch at a time; return their lengths."""
    raw, lengths = path.with_suffix(".raw"), []
    with raw.open("wb") as out:
        for batch in tokenized_batches(tokenizer, texts):
            for doc in (doc for doc in batch if doc):
                out.write(np.asarray(doc, dtype="<i4").tobytes())
                lengths.append(len(doc))
    with path.open("wb") as out, raw.open("rb") as data:
        header = {"descr": "<i4", "fortran_order": False, "shape": (sum(lengths),)}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(data, out)
    raw.unlink()
    return lengths


def tokenized_split(tokenizer, corpus: str, split_seed: int, split: str) -> list[np.ndarray]:
    """The documents of one split of `corpus` as token arrays, from `token_cache`."""
    folder = token_cache(tokenizer, corpus, split_seed, split)
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    return [tokens[a:b] for a, b in itertools.pairwise(offsets)]


def token_stream(tokenizer, corpus: str, split_seed: int, split: str) -> TokenStream:
    """One split as a `TokenStream` from `token_cache`, its tokens memory-mapped: processes
    reading the same cache share one copy in the page cache."""
    folder = token_cache(tokenizer, corpus, split_seed, split)
    return TokenStream(np.load(folder / "tokens.npy", mmap_mode="r"),
                       np.load(folder / "offsets.npy"))


def split_documents(tokenizer, split: str = "test", corpus: str = STDLIB,
                    split_seed: int = 0) -> list[list[int]]:
    """Token ids of one corpus split's non-empty documents as lists (the test split is never
    trained on), from the `tokenized_split` cache."""
    return [doc.tolist() for doc in tokenized_split(tokenizer, corpus, split_seed, split)]
