"""Tokenized corpus splits, prepared once per corpus content, tokenizer and split seed.

A cache is a folder `$MINILLADA_CACHE/tokens/<key>/` holding every split (`train/`,
`validation/`, `test/`: tokens.npy, the documents' int32 tokens back to back, and offsets.npy,
int64) and `manifest.json`. The key hashes the corpus bytes (`corpus.corpus_digest`), the
tokenizer (`tokenizer_digest`: its serialized rules, vocabulary and added tokens) and the split
seed, so a corpus overwritten in place, or another tokenizer, gets a folder of its own and never
the old tokens. The manifest records the size and sha256 of each file; a process opening the
cache checks them (once per process and file), so a damaged, truncated or overwritten file is
refused by name instead of trained on.

`prepare_token_cache` tokenizes every split in one pass, a batch of documents at a time, with a
progress bar (`minillada prepare`). `token_cache(..., build=False)` only opens a prepared cache
and raises `MissingTokenCacheError` (naming what is missing, or that the corpus changed since it was
prepared) where torchrun ranks must not tokenize; with `build=True` (one process) it prepares a
missing cache itself. `tokenized_split` reads a split as token arrays, `token_stream`
memory-maps it (`TokenStream`: what `training.packed_corpus` packs rows from on demand),
`split_documents` gives lists (the evaluations' held-out documents).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from minillada.common.atomic import atomic_folder
from minillada.common.folders import cache_dir
from minillada.common.names import STDLIB
from minillada.data.corpus import (
    CorpusSplit,
    corpus_digest,
    file_sha256,
    load_corpus,
    split_corpus,
    tokenized_batches,
)

CACHE_FORMAT = 2  # bump when the layout or the tokenization rules change
REMEDY = "prepare it again with `minillada prepare` (it rewrites a damaged cache)"
SPLITS = CorpusSplit._fields
FILES = tuple(f"{split}/{name}" for split in SPLITS for name in ("tokens.npy", "offsets.npy"))


class TokenStream(NamedTuple):
    """A split's documents back to back: `tokens` (int32, memory-mapped, read-only) and
    `offsets` (int64, D + 1): document d is tokens[offsets[d]:offsets[d + 1]]."""

    tokens: np.ndarray
    offsets: np.ndarray


class MissingTokenCacheError(ValueError):
    """No prepared token cache for this corpus content, tokenizer and split seed."""


class DamagedTokenCacheError(ValueError):
    """A prepared token cache whose files are not what its manifest records."""


def tokenizer_digest(tokenizer) -> str:
    """The sha256 of a fast tokenizer's serialized form (its tokenizer.json: model, vocabulary,
    merges, pre-tokenizer, added tokens): what its tokens depend on. Computed once per tokenizer
    and size (serializing a 126K vocabulary takes a while; adding a token changes the size)."""
    return _tokenizer_digest(tokenizer, len(tokenizer))


@functools.lru_cache(maxsize=8)
def _tokenizer_digest(tokenizer, size: int) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def _identity(tokenizer, corpus: str, split_seed: int) -> dict[str, Any]:
    source = str(Path(corpus).resolve()) if corpus != STDLIB else STDLIB
    return {"format": CACHE_FORMAT, "corpus": source, "corpus_sha256": corpus_digest(corpus),
            "tokenizer_sha256": tokenizer_digest(tokenizer), "split_seed": split_seed}


def _folder(identity: dict[str, Any]) -> Path:
    key = json.dumps({k: identity[k] for k in ("format", "corpus_sha256", "tokenizer_sha256",
                                               "split_seed")}, sort_keys=True)
    return cache_dir() / "tokens" / hashlib.sha256(key.encode()).hexdigest()[:24]


def token_cache(tokenizer, corpus: str, split_seed: int, split: str | None = None, *,
                build: bool = True) -> Path:
    """The prepared cache folder of `corpus` (its `split` subfolder when given), its files
    checked against the manifest. Missing: prepared here with `build` (one process), else
    `MissingTokenCacheError`. A damaged file: `DamagedTokenCacheError` naming it."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    identity = _identity(tokenizer, corpus, split_seed)
    folder = _folder(identity)
    if not (folder / "manifest.json").is_file():
        if not build:
            raise MissingTokenCacheError(_missing(identity))
        _write_cache(tokenizer, corpus, identity, folder, progress=None)
    verify_token_cache(folder)
    return folder if split is None else folder / split


def prepare_token_cache(tokenizer, corpus: str = STDLIB, split_seed: int = 0,
                        progress: bool | None = True) -> tuple[Path, bool]:
    """Tokenize every split of `corpus` into its cache folder, in this process, unless an intact
    one is there (a damaged one is written again). Returns (folder, whether it was written)."""
    identity = _identity(tokenizer, corpus, split_seed)
    folder = _folder(identity)
    if (folder / "manifest.json").is_file():
        try:
            verify_token_cache(folder)
            return folder, False
        except DamagedTokenCacheError:
            pass
    _write_cache(tokenizer, corpus, identity, folder, progress)
    verify_token_cache(folder)
    return folder, True


def _missing(identity: dict[str, Any]) -> str:
    """What is missing, and whether a cache of an earlier version of the same corpus exists."""
    what = (f"no prepared token cache of corpus {identity['corpus']!r} (sha256 "
            f"{identity['corpus_sha256'][:12]}) for this tokenizer and split seed "
            f"{identity['split_seed']}")
    for manifest in sorted((cache_dir() / "tokens").glob("*/manifest.json")):
        try:
            other = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if {k: other.get(k) for k in ("format", "corpus", "tokenizer_sha256", "split_seed")} == {
                k: identity[k] for k in ("format", "corpus", "tokenizer_sha256", "split_seed")}:
            return (what + f": the cache in {str(manifest.parent)!r} is stale (the corpus changed "
                    f"since it was prepared: sha256 {other['corpus_sha256'][:12]} then)")
    return what


def _write_cache(tokenizer, corpus: str, identity: dict[str, Any], folder: Path,
                 progress: bool | None) -> None:
    """Every split's tokens and offsets, then the manifest, into `folder` (atomically)."""
    splits = split_corpus(load_corpus(corpus), seed=identity["split_seed"])
    counts = {}
    with atomic_folder(folder) as temporary:
        for split in SPLITS:
            (temporary / split).mkdir()
            lengths = _write_token_array(tokenizer, getattr(splits, split),
                                         temporary / split / "tokens.npy", progress,
                                         f"tokenizing {split}")
            np.save(temporary / split / "offsets.npy",
                    np.cumsum([0, *lengths]).astype(np.int64))
            counts[split] = {"documents": len(lengths), "tokens": int(sum(lengths))}
        files = {name: {"bytes": (temporary / name).stat().st_size,
                        "sha256": file_sha256(temporary / name)} for name in FILES}
        manifest = {**identity, "splits": counts, "files": files}
        (temporary / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _write_token_array(tokenizer, texts: Sequence[str], path: Path, progress: bool | None,
                       desc: str) -> list[int]:
    """Write the non-empty documents' tokens as one int32 .npy array (np.save's bytes), one
    batch at a time; return their lengths."""
    raw, lengths = path.with_suffix(".raw"), []
    with raw.open("wb") as out:
        for batch in tokenized_batches(tokenizer, texts, progress, desc):
            for doc in (doc for doc in batch if doc):
                out.write(np.asarray(doc, dtype="<i4").tobytes())
                lengths.append(len(doc))
    with path.open("wb") as out, raw.open("rb") as data:
        header = {"descr": "<i4", "fortran_order": False, "shape": (sum(lengths),)}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(data, out)
    raw.unlink()
    return lengths


def read_manifest(folder: Path) -> dict[str, Any]:
    """A cache folder's manifest.json; `DamagedTokenCacheError` naming it when unreadable."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        manifest["files"][FILES[0]]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedTokenCacheError(f"{path} is unreadable ({error}): the token cache is damaged; "
                                f"{REMEDY}") from None
    return manifest


def verify_token_cache(folder: Path) -> dict[str, Any]:
    """The manifest of a cache folder whose every file has the size and sha256 it records;
    `DamagedTokenCacheError` naming the first file that does not (absent, truncated or
    overwritten)."""
    manifest = read_manifest(folder)
    for name in FILES:
        path, recorded = folder / name, manifest["files"].get(name, {})
        found = (f"{path.stat().st_size} bytes" if path.is_file() else "no file")
        if (not path.is_file() or path.stat().st_size != recorded.get("bytes")
                or file_sha256(path) != recorded.get("sha256")):
            raise DamagedTokenCacheError(
                f"{path} is not the file {folder / 'manifest.json'} records ({found}, "
                f"{recorded.get('bytes')} bytes with sha256 {str(recorded.get('sha256'))[:12]} "
                f"recorded): the token cache is damaged; {REMEDY}")
    return manifest


def split_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(tokens memory-mapped read-only, offsets) of a verified split folder."""
    return np.load(folder / "tokens.npy", mmap_mode="r"), np.load(folder / "offsets.npy")


def tokenized_split(tokenizer, corpus: str, split_seed: int, split: str) -> list[np.ndarray]:
    """The documents of one split of `corpus` as token arrays, from `token_cache`."""
    return documents_of(token_cache(tokenizer, corpus, split_seed, split))


def documents_of(split_folder: Path) -> list[np.ndarray]:
    """The documents of a verified split folder as token arrays (read into memory)."""
    tokens, offsets = np.load(split_folder / "tokens.npy"), np.load(split_folder / "offsets.npy")
    return [tokens[a:b] for a, b in itertools.pairwise(offsets)]


def token_stream(tokenizer, corpus: str, split_seed: int, split: str) -> TokenStream:
    """One split as a `TokenStream` from `token_cache`, its tokens memory-mapped: processes
    reading the same cache share one copy in the page cache."""
    return TokenStream(*split_arrays(token_cache(tokenizer, corpus, split_seed, split)))


def split_documents(tokenizer, split: str = "test", corpus: str = STDLIB,
                    split_seed: int = 0) -> list[list[int]]:
    """Token ids of one corpus split's non-empty documents as lists (the test split is never
    trained on), from the `tokenized_split` cache."""
    return [doc.tolist() for doc in tokenized_split(tokenizer, corpus, split_seed, split)]
