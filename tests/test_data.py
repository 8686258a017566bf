"""Corpus loading and splitting, the tokenizer, synthetic long-context tasks."""

import json

import pytest

from minillada import data


@pytest.fixture(scope="module")
def stdlib_docs():
    return data.load_corpus()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILLADA_CACHE", str(tmp_path_factory.mktemp("cache")))
        return data.get_tokenizer(512)


# -- corpus ------------------------------------------------------------------------------------


def test_stdlib_corpus_is_deterministic_and_has_long_documents(stdlib_docs):
    assert data.load_corpus("stdlib") == stdlib_docs
    lengths = sorted(len(doc) for doc in stdlib_docs)
    assert len(stdlib_docs) > 300
    median = lengths[len(lengths) // 2]
    assert lengths[-1] > 100_000 and lengths[-1] > 20 * median  # long-tailed lengths
    assert any("def " in doc for doc in stdlib_docs)  # sources
    assert any(doc.lstrip().startswith("The ") for doc in stdlib_docs)  # pydoc topics prose


def test_split_is_disjoint_complete_and_independent_of_order(stdlib_docs):
    split = data.split_corpus(stdlib_docs, seed=0)
    assert sum(map(len, split)) == len(stdlib_docs)
    assert not set(split.train) & set(split.validation)
    assert not set(split.train) & set(split.test)
    assert not set(split.validation) & set(split.test)
    assert len(split.validation) > 0 and len(split.test) > 0
    assert len(split.train) / len(stdlib_docs) == pytest.approx(0.9, abs=0.04)
    shuffled = data.split_corpus(stdlib_docs[::-1], seed=0)
    assert set(shuffled.test) == set(split.test)
    assert data.split_corpus(stdlib_docs, seed=1).test != split.test


def test_user_corpora_txt_folder_and_jsonl(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "sub" / "c.txt").write_text("third")
    (folder / "blank.txt").write_text("  \n")
    (folder / "notes.md").write_text("ignored")
    assert data.load_corpus(folder) == ["first", "second", "third"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["one", "two"]) + "\n\n")
    assert data.load_corpus(str(jsonl)) == ["one", "two"]


def test_bad_corpora(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_corpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no non-blank document"):
        data.load_corpus(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        data.load_corpus(bad)
    other = tmp_path / "a.csv"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"a\.csv"):
        data.load_corpus(other)
    with pytest.raises(ValueError, match="validation"):
        data.split_corpus(["a"], validation=0.6, test=0.5)


# -- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_tokens(tokenizer):
    text = "def f(x):\n    return x ** 2  # émigré, 東京\n\n\tThe pass key is 90210."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == 512
    specials = [tokenizer.mask_token_id, tokenizer.eod_token_id, tokenizer.pad_token_id,
                tokenizer.bos_token_id]
    assert specials == [0, 1, 2, 3]
    assert tokenizer.eos_token_id == tokenizer.eod_token_id
    assert tokenizer.convert_ids_to_tokens(specials) == list(data.SPECIAL_TOKENS.values())
    # special tokens are never produced from ordinary text, but are parsed as one token each
    assert not set(specials) & set(ids)
    assert tokenizer.encode("<|mask|><|eod|>", add_special_tokens=False) == [0, 1]


def test_every_digit_is_its_own_token(tokenizer):
    ids = tokenizer.encode("key 12345 and 0987654321", add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("123450987654321")


def test_tokenizer_is_cached_and_reloadable(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path))
    first = data.get_tokenizer(300)
    (folder,) = (tmp_path / "tokenizers").iterdir()
    assert folder.name.endswith(f"-v{data.TOKENIZER_VERSION}-300")
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    second = data.get_tokenizer(300)
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # not retrained
    assert second.get_vocab() == first.get_vocab()
    assert not [p for p in (tmp_path / "tokenizers").iterdir() if p.name.startswith(".")]
    assert data.load_tokenizer(folder, vocab_size=300).get_vocab() == first.get_vocab()
    with pytest.raises(ValueError, match="vocab_size=299"):
        data.load_tokenizer(folder, vocab_size=299)
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        data.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        data.get_tokenizer(100)


def test_tokenize_documents(tokenizer):
    docs = ["x = 1\n", "The sky is blue."]
    ids = data.tokenize_documents(tokenizer, docs)
    assert [tokenizer.decode(d) for d in ids] == docs
    assert all(tokenizer.bos_token_id not in d for d in ids)
