"""Corpus loading and splitting, the tokenizer, synthetic long-context tasks."""

import itertools
import json

import pytest

from minillada.data.corpus import (
    SPECIAL_TOKENS,
    TOKENIZER_VERSION,
    get_tokenizer,
    load_corpus,
    load_tokenizer,
    split_corpus,
    tokenize_documents,
)
from minillada.data.tasks import (
    TASKS,
    Filler,
    corpus_filler,
    make_task_sample,
    min_task_length,
    noise_filler,
)


@pytest.fixture(scope="module")
def stdlib_docs():
    return load_corpus()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILLADA_CACHE", str(tmp_path_factory.mktemp("cache")))
        return get_tokenizer(512)


# -- corpus ------------------------------------------------------------------------------------


def test_stdlib_corpus_is_deterministic_and_has_long_documents(stdlib_docs):
    assert load_corpus("stdlib") == stdlib_docs
    lengths = sorted(len(doc) for doc in stdlib_docs)
    assert len(stdlib_docs) > 300
    median = lengths[len(lengths) // 2]
    assert lengths[-1] > 100_000 and lengths[-1] > 20 * median  # long-tailed lengths
    assert any("def " in doc for doc in stdlib_docs)  # sources
    assert any(doc.lstrip().startswith("The ") for doc in stdlib_docs)  # pydoc topics prose


def test_split_is_disjoint_complete_and_independent_of_order(stdlib_docs):
    split = split_corpus(stdlib_docs, seed=0)
    assert sum(map(len, split)) == len(stdlib_docs)
    assert not set(split.train) & set(split.validation)
    assert not set(split.train) & set(split.test)
    assert not set(split.validation) & set(split.test)
    assert len(split.validation) > 0 and len(split.test) > 0
    assert len(split.train) / len(stdlib_docs) == pytest.approx(0.9, abs=0.04)
    shuffled = split_corpus(stdlib_docs[::-1], seed=0)
    assert set(shuffled.test) == set(split.test)
    assert split_corpus(stdlib_docs, seed=1).test != split.test


def test_user_corpora_txt_folder_and_jsonl(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "sub" / "c.txt").write_text("third")
    (folder / "blank.txt").write_text("  \n")
    (folder / "notes.md").write_text("ignored")
    assert load_corpus(folder) == ["first", "second", "third"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in ["one", "two"]) + "\n\n")
    assert load_corpus(str(jsonl)) == ["one", "two"]


def test_bad_corpora(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_corpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no \.txt files"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "empty" / "blank.txt").write_text(" \n")
    with pytest.raises(ValueError, match="no non-blank document"):
        load_corpus(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_corpus(bad)
    other = tmp_path / "a.csv"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"a\.csv"):
        load_corpus(other)
    with pytest.raises(ValueError, match="validation"):
        split_corpus(["a"], validation=0.6, test=0.5)


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
    assert tokenizer.convert_ids_to_tokens(specials) == list(SPECIAL_TOKENS.values())
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
    first = get_tokenizer(300)
    (folder,) = (tmp_path / "tokenizers").iterdir()
    assert folder.name.endswith(f"-v{TOKENIZER_VERSION}-300")
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    second = get_tokenizer(300)
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # not retrained
    assert second.get_vocab() == first.get_vocab()
    assert not [p for p in (tmp_path / "tokenizers").iterdir() if p.name.startswith(".")]
    assert load_tokenizer(folder, vocab_size=300).get_vocab() == first.get_vocab()
    with pytest.raises(ValueError, match="vocab_size=299"):
        load_tokenizer(folder, vocab_size=299)
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        get_tokenizer(100)


def test_tokenize_documents(tokenizer):
    docs = ["x = 1\n", "The sky is blue."]
    ids = tokenize_documents(tokenizer, docs)
    assert [tokenizer.decode(d) for d in ids] == docs
    assert all(tokenizer.bos_token_id not in d for d in ids)


# -- synthetic tasks ---------------------------------------------------------------------------


def _max_unit(filler: Filler) -> int:
    starts = [*filler.unit_start.nonzero()[0].tolist(), len(filler.tokens)]
    return max(b - a for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("task", list(TASKS))
def test_task_samples_have_exactly_the_requested_length(tokenizer, task):
    for length in (300, 301, 1000, 2500):
        for depth in (0.0, 37.5, 100.0):
            sample = make_task_sample(tokenizer, task, length, depth, seed=length)
            assert sample.length == length == len(sample.prompt_ids) + len(sample.answer_ids)
            assert sample.input_ids == [*sample.prompt_ids, *sample.answer_ids]
            assert sample.answer_mask == [False] * len(sample.prompt_ids) + [True] * len(
                sample.answer_ids)
            assert sample.task == task and sample.depth == depth
            assert tokenizer.decode(sample.answer_ids).strip() == sample.answer_text


@pytest.mark.parametrize("task", list(TASKS))
def test_shortest_length_fills_nothing_and_shorter_is_refused(tokenizer, task):
    minimum = 1000 - make_task_sample(tokenizer, task, 1000, 50, seed=3).metadata[
        "filler_tokens"]
    shortest = make_task_sample(tokenizer, task, minimum, 50, seed=3)
    assert shortest.length == minimum and shortest.metadata["filler_tokens"] == 0
    with pytest.raises(ValueError, match=f"at least {minimum} tokens"):
        make_task_sample(tokenizer, task, minimum - 1, 50, seed=3)
    # min_task_length is the largest such minimum over its seeds.
    assert min_task_length(tokenizer, task, seeds=[3]) == minimum
    longest = min_task_length(tokenizer, task, seeds=range(8))
    for seed in range(8):
        make_task_sample(tokenizer, task, longest, 50, seed=seed)


@pytest.mark.parametrize("task", ["passkey", "niah"])
def test_the_needle_holds_the_answer_at_the_requested_depth(tokenizer, task):
    filler = noise_filler(tokenizer) if task == "passkey" else corpus_filler(tokenizer)
    unit = _max_unit(filler) if task == "passkey" else 60  # corpus lines: tokens per line
    for depth in (0.0, 10.0, 50.0, 90.0, 100.0):
        sample = make_task_sample(tokenizer, task, 3000, depth, seed=int(depth))
        start, end = sample.metadata["needle_start"], sample.metadata["needle_end"]
        needle = sample.prompt_ids[start:end]
        assert tokenizer.decode(needle).count(sample.answer_text) >= 1
        digits = sample.answer_ids
        assert any(needle[i:i + len(digits)] == digits for i in range(len(needle)))
        # the needle starts after `start` filler tokens, the requested share of the filler
        assert abs(start - depth / 100 * sample.metadata["filler_tokens"]) <= unit
        assert sample.answer_text not in tokenizer.decode(sample.prompt_ids[:start])
        assert len(sample.answer_ids) == 5  # one token per digit, no space token


def test_passkey_rows_tokenize_like_their_text(tokenizer):
    sample = make_task_sample(tokenizer, "passkey", 400, 30, seed=1)
    text = tokenizer.decode(sample.input_ids)
    assert tokenizer.encode(text, add_special_tokens=False) == sample.input_ids
    assert text.endswith(f"The pass key is {sample.answer_text}")


def test_multikey_asks_for_one_of_several_needles(tokenizer):
    sample = make_task_sample(tokenizer, "niah_multikey", 2000, 25, seed=4)
    words, keys = sample.metadata["words"], sample.metadata["keys"]
    assert len(set(words)) == len(words) == 4 and sample.answer_text == keys[0]
    prompt = tokenizer.decode(sample.prompt_ids)
    for word, key in zip(words, keys, strict=True):
        assert f"The special magic number for {word} is {key}." in prompt
    assert prompt.endswith(f"The special magic number for {words[0]} is ")
    queried = make_task_sample(tokenizer, "niah_multikey", 2000, 25, seed=4, keys=2)
    assert len(queried.metadata["words"]) == 2


def test_variable_tracking_chain(tokenizer):
    sample = make_task_sample(tokenizer, "variable_tracking", 800, 20, seed=5, hops=3)
    names, value = sample.metadata["names"], sample.metadata["key"]
    assert len(names) == 4 and sample.answer_text == " ".join(names)
    prompt = tokenizer.decode(sample.prompt_ids)
    statements = [f"VAR {names[0]} = {value}."] + [
        f"VAR {b} = {a}." for a, b in itertools.pairwise(names)]
    positions = [prompt.index(statement) for statement in statements]
    assert positions == sorted(positions)  # the chain reads in order
    assert sample.metadata["needle_starts"] == sorted(sample.metadata["needle_starts"])
    assert "needle_end" not in sample.metadata  # no single needle
    assert abs(positions[0] / len(prompt) - 0.2) < 0.05


def test_task_samples_are_deterministic_by_seed(tokenizer):
    for task in TASKS:
        first = make_task_sample(tokenizer, task, 500, seed=11)
        assert make_task_sample(tokenizer, task, 500, seed=11) == first
        other = make_task_sample(tokenizer, task, 500, seed=12)
        assert other.answer_text != first.answer_text
        assert 0 <= first.depth <= 100 and first.depth != other.depth  # random depth per seed


def test_key_digits_sets_the_answer_length(tokenizer):
    for digits in (1, 3, 8):
        sample = make_task_sample(tokenizer, "passkey", 200, 50, key_digits=digits)
        assert len(sample.answer_ids) == digits and len(sample.answer_text) == digits


def test_bad_task_requests(tokenizer):
    with pytest.raises(ValueError, match="'copy'"):
        make_task_sample(tokenizer, "copy", 100)
    for depth in (-1.0, 100.5):
        with pytest.raises(ValueError, match=str(depth)):
            make_task_sample(tokenizer, "passkey", 100, depth)
    with pytest.raises(ValueError, match="key_digits"):
        make_task_sample(tokenizer, "passkey", 100, key_digits=0)
    with pytest.raises(ValueError, match="length"):
        make_task_sample(tokenizer, "passkey", 0)
    with pytest.raises(ValueError, match="keys"):
        make_task_sample(tokenizer, "niah", 500, keys=0)
    with pytest.raises(ValueError, match="'dev'"):
        make_task_sample(tokenizer, "niah", 500, haystack_split="dev")
