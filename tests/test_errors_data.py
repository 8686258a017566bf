"""Bad corpus files and tokenizer folders are named; large corpora tokenize with progress."""

from __future__ import annotations

import json
import types

import pytest

from minillada.data.corpus import (
    TOKENIZE_BATCH,
    _jsonl_texts,
    load_corpus,
    load_tokenizer,
    tokenize_documents,
)


def _write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        # .txt files in a folder
        ("texts/a.txt", b"caf\xc3\xa9 ok\n\xff\xfe bad", r"a\.txt' is not UTF-8 text: byte "
         r"b'\\xff' at byte offset 9 \(invalid start byte\)"),
        ("texts/latin1.txt", "déjà vu".encode("latin-1"), r"latin1\.txt' is not UTF-8 text: "
         r"byte b'\\xe9' at byte offset 1"),
        ("texts/image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"image\.txt' is binary "
         r"\(a NUL byte at byte offset 8\)"),
        ("texts/sub/cut.txt", "ab€".encode()[:-1], r"cut\.txt' is not UTF-8 text: byte "
         r"b'\\xe2' at byte offset 2 \(unexpected end of data\)"),
        # .jsonl files
        ("docs.jsonl", b'{"text": "one"}\n{"text": "tw\xff"}\n', r"docs\.jsonl' is not UTF-8 "
         r"text: byte b'\\xff' at byte offset 28 .*\(line 2\)"),
        ("docs.jsonl", b'{"text": "one"}\n{"text": "half-wri', r"docs\.jsonl:2: not a JSON "
         r"value \(Unterminated string .* column 10; a half-written line\?\); expected one object "
         r'with a string "text" field per line'),
        ("docs.jsonl", b'{"text": "one"}\n\n{"text": 5}\n', r"docs\.jsonl:3: expected an object "
         r"with a string 'text' field, got an object whose 'text' is int"),
        ("docs.jsonl", b'{"body": "one"}\n', r"docs\.jsonl:1: expected an object with a string "
         r"'text' field, got an object without 'text'"),
        ("docs.jsonl", b'["one"]\n', r"docs\.jsonl:1: .*got a JSON list"),
        ("docs.jsonl", b'"one"\n', r"docs\.jsonl:1: .*got a JSON str"),
    ],
)
def test_bad_corpus_files_name_the_file_and_where(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    source = tmp_path / "texts" if name.startswith("texts/") else path
    with pytest.raises(ValueError, match=message):
        load_corpus(source)


def test_a_folder_without_txt_files_says_so(tmp_path):
    _write(tmp_path / "notes" / "readme.md", b"not a corpus")
    with pytest.raises(ValueError, match=r"corpus folder '.*notes' holds no \.txt files"):
        load_corpus(tmp_path / "notes")


@pytest.mark.parametrize("name", ["nowhere", "nowhere.jsonl", "no/such/folder"])
def test_a_missing_corpus_path_is_named(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=rf"corpus path '.*{name}' does not exist"):
        load_corpus(tmp_path / name)


def test_jsonl_is_read_line_by_line(tmp_path):
    path = _write(tmp_path / "docs.jsonl",
                  b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(5)))
    texts = _jsonl_texts(path)
    assert isinstance(texts, types.GeneratorType)
    assert next(texts) == "doc 0"
    assert load_corpus(path) == [f"doc {i}" for i in range(5)]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda root: root / "absent", FileNotFoundError,
         r"tokenizer folder '.*absent' does not exist"),
        (lambda root: _write(root / "file", b"x"), FileNotFoundError,
         r"tokenizer folder '.*file' does not exist \(or is no folder\)"),
        (lambda root: _write(root / "ckpt" / "config.json", b"{}").parent, FileNotFoundError,
         r"no tokenizer\.json in '.*ckpt': a tokenizer folder holds the tokenizer\.json"),
    ],
)
def test_load_tokenizer_never_trains_and_names_the_missing_file(tmp_path, monkeypatch, make,
                                                                error, message):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(error, match=message):
        load_tokenizer(make(tmp_path))
    assert not (tmp_path / "cache").exists()  # nothing was trained or cached


class CountingTokenizer:
    """A stand-in tokenizer: one id per character; records the batch sizes it is called with."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        self.batches.append(len(texts))
        return {"input_ids": [[ord(c) for c in text] for text in texts]}


@pytest.mark.parametrize(
    ("count", "progress", "shown", "batches"),
    [
        (0, None, False, []),
        (3, None, False, [3]),
        (3, True, True, [3]),
        (TOKENIZE_BATCH, None, False, [TOKENIZE_BATCH]),
        (TOKENIZE_BATCH + 1, None, True, [TOKENIZE_BATCH, 1]),
        (2 * TOKENIZE_BATCH + 5, False, False,
         [TOKENIZE_BATCH, TOKENIZE_BATCH, 5]),
    ],
)
def test_tokenize_documents_batches_and_shows_progress_for_large_corpora(capsys, count, progress,
                                                                         shown, batches):
    docs = [f"d{i}" for i in range(count)]
    tokenizer = CountingTokenizer()
    ids = tokenize_documents(tokenizer, docs, progress=progress)
    assert ids == [[ord(c) for c in doc] for doc in docs]
    assert tokenizer.batches == batches
    assert ("tokenizing" in capsys.readouterr().err) is shown
