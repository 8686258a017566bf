"""Retrieval keys, packed retrieval rows of the extend stage, and distractor samples."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minillada.data.corpus import KEY_TOKEN_FORMAT, get_tokenizer, key_token_count
from minillada.data.keys import CODE_BASE, key_space
from minillada.data.tasks import make_decoy_sample, make_task_sample
from minillada.data.token_cache import tokenized_split
from minillada.evals.retrieval import chance_level
from minillada.training.batches import packed_task_row
from minillada.training.config import TrainConfig


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer(512)


def test_key_spaces_and_their_chance(tokenizer):
    numbers = key_space(tokenizer, "number", 2)
    assert numbers.size == 100 and chance_level("niah", numbers) == pytest.approx(1.0)
    drawn = {numbers.draw(random.Random(i)) for i in range(2000)}
    assert drawn == {f"{i:02d}" for i in range(100)}  # leading zeros: all 100 keys
    keys = key_space(tokenizer, "token")
    assert keys.size == key_token_count(512) and keys.words[0] == "<|key000|>"
    assert chance_level("passkey", keys) == pytest.approx(100 / keys.size)
    for word in key_space(tokenizer, "word").words:
        assert len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1
    with pytest.raises(ValueError, match="unknown key kind 'emoji'"):
        key_space(tokenizer, "emoji")


def test_code_keys_write_digit_position_i_in_its_own_ten_key_tokens(tokenizer):
    codes = key_space(tokenizer, "code", 2)
    assert codes.size == 100 and chance_level("niah", codes) == pytest.approx(1.0)
    assert codes.noun == "number"
    token_id = tokenizer.convert_tokens_to_ids
    drawn = set()
    for i in range(3000):
        ids = tokenizer.encode(codes.draw(random.Random(i)), add_special_tokens=False)
        first, second = (token_id(KEY_TOKEN_FORMAT.format(k)) for k in (0, 10))
        assert len(ids) == 2 and first <= ids[0] < first + 10 <= second <= ids[1] < second + 10
        drawn.add(tuple(ids))
    assert len(drawn) == 100  # uniform over all 10 x 10 codes
    # A vocabulary holds key_token_count(V) key tokens: codes of at most that // 10 digits.
    most = key_token_count(512) // CODE_BASE
    assert key_space(tokenizer, "code", most).size == 10**most
    with pytest.raises(ValueError, match=f"code keys of {most + 1} digits need "
                                         f"{10 * (most + 1)} reserved key tokens; the "
                                         f"tokenizer has {key_token_count(512)}"):
        key_space(tokenizer, "code", most + 1)


def test_answer_slots_and_the_keys_a_copier_picks_among(tokenizer):
    token_id = tokenizer.convert_tokens_to_ids
    tokens = key_space(tokenizer, "token")
    (slot,) = tokens.slot_token_ids(tokenizer)
    assert tokens.slots == 1 and slot == frozenset(token_id(list(tokens.words)))
    codes = key_space(tokenizer, "code", 2)
    first, second = codes.slot_token_ids(tokenizer)
    assert codes.slots == 2 and len(first) == len(second) == CODE_BASE and not first & second
    numbers = key_space(tokenizer, "number", 3)
    assert numbers.slots == 3 and len(set(numbers.slot_token_ids(tokenizer))) == 1
    # multi-key NIAH names every needle's key as answer tokens, the queried one first
    sample = make_task_sample(tokenizer, "niah_multikey", 200, 50, seed=3, key_kind="token")
    keys = sample.metadata["key_ids"]
    assert len(keys) == 4 and keys[0] == list(sample.answer_ids)
    assert len({tuple(k) for k in keys}) == 4
    assert all(k[0] in slot and k[0] in sample.prompt_ids for k in keys)


@pytest.mark.parametrize("kind", ["number", "word", "token", "code"])
def test_every_key_kind_gives_one_answer_of_the_stated_length(tokenizer, kind):
    for task in ("passkey", "niah"):
        sample = make_task_sample(tokenizer, task, 96, 50.0, 3, key_digits=2, key_kind=kind)
        assert sample.length == 96 == len(sample.input_ids)
        assert tokenizer.decode(sample.answer_ids).strip() == sample.answer_text
        # The key is in the needle, and prompt + answer tokenize as the joined text does.
        assert sample.answer_text in tokenizer.decode(sample.prompt_ids)
        expected = 2 if kind in ("number", "code") else 1
        assert len(sample.answer_ids) == expected


def config(packing: str, **fields) -> TrainConfig:
    return TrainConfig(seq_len=512, packing=packing, tasks=("passkey", "niah"),
                       task_key_kind="number", task_key_digits=2, task_lengths=(96, 512),
                       model=dict(vocab_size=512), **fields)


def row_documents(row, eod_token_id: int | None) -> list[list[int]]:
    """The documents of one packed row, separators dropped."""
    tokens, doc_ids = row.tokens[0].tolist(), row.doc_ids[0].tolist()
    documents: dict[int, list[int]] = {}
    for token, doc in zip(tokens, doc_ids, strict=True):
        documents.setdefault(doc, []).append(token)
    return [[t for t in doc if t != eod_token_id] for doc in documents.values()]


@pytest.mark.parametrize("restart", [False, True])
@pytest.mark.parametrize("packing", ["direct", "eod", "adaptive", "adaptive_eod"])
def test_packed_task_rows_fill_the_row_with_documents_laid_out_by_the_packing(tokenizer, packing,
                                                                              restart):
    for seed in range(12):
        for answer_only in (False, True):
            row = packed_task_row(tokenizer, config(packing, restart_positions=restart),
                                  np.random.default_rng(seed), seed, answer_only)
            assert row.tokens.shape == (1, 512) and (row.doc_ids >= 0).all()
            if answer_only:  # only answers (2 digits per retrieval document) are maskable
                assert 2 <= int(row.maskable.sum()) <= 16 and int(row.maskable.sum()) % 2 == 0
            else:
                assert row.maskable.all()
            starts = torch.ones(512, dtype=torch.bool)
            starts[1:] = row.doc_ids[0, 1:] != row.doc_ids[0, :-1]
            if restart:  # positions restart at each document
                assert (row.positions[0][starts] == 0).all()
            else:  # the paper's concatenation: positions run over the packed row
                assert torch.equal(row.positions[0], torch.arange(512, dtype=torch.int32))
    eod = sum(int((packed_task_row(tokenizer, config(packing), np.random.default_rng(s), s,
                                   False).tokens == tokenizer.eod_token_id).sum())
              for s in range(4))
    assert (eod > 0) == (packing in ("eod", "adaptive_eod"))


def test_every_packing_of_one_seed_sees_the_same_documents_in_the_same_order(tokenizer):
    for seed in range(10):
        rows = {packing: row_documents(packed_task_row(tokenizer, config(packing),
                                                       np.random.default_rng(seed), seed, False),
                                       tokenizer.eod_token_id)
                for packing in ("direct", "eod", "adaptive")}
        assert rows["direct"] == rows["adaptive"]
        direct, eod = rows["direct"], rows["eod"]
        # With separators the row ends earlier, inside the same last document.
        assert len(eod) <= len(direct) and eod[:-1] == direct[:len(eod) - 1]
        assert direct[len(eod) - 1][:len(eod[-1])] == eod[-1]


def test_packed_task_rows_mix_retrieval_and_natural_documents(tokenizer):
    questions, several, natural = 0, 0, 0
    train = {tuple(doc[:40].tolist()) for doc in tokenized_split(tokenizer, "stdlib", 0,
                                                                       "train")}
    for seed in range(20):
        row = packed_task_row(tokenizer, config("direct"), np.random.default_rng(seed), seed, True)
        questions += int(row.maskable.sum()) // 2
        documents = row_documents(row, None)
        several += len(documents) >= 2
        natural += sum(tuple(doc[:40]) in train for doc in documents)
    assert questions > 20  # more than one retrieval document per row on average
    assert several >= 15 and natural >= 5  # whole natural documents start in the rows


def test_packed_rows_depend_only_on_the_seed_not_the_packing_draws(tokenizer):
    a = packed_task_row(tokenizer, config("eod"), np.random.default_rng(5), 5, False)
    b = packed_task_row(tokenizer, config("eod"), np.random.default_rng(5), 5, False)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.positions, b.positions)


def test_task_lengths_are_checked():
    with pytest.raises(ValueError, match=r"task_lengths \[600, 700\] must be"):
        TrainConfig(seq_len=512, task_lengths=(600, 700)).validate()


@pytest.mark.parametrize("task", ["niah", "passkey"])
def test_decoy_samples_pack_documents_about_the_same_question_with_other_keys(tokenizer, task):
    sample = make_decoy_sample(tokenizer, task, 512, 50.0, 7, decoys=2, key_digits=2)
    assert sample.length == 512 == len(sample.input_ids)
    lengths = sample.metadata["doc_lengths"]
    assert lengths == [128, 128, len(sample.prompt_ids) - 256] and sum(lengths) == 512 - 2
    keys = sample.metadata["decoy_keys"]
    assert len(set(keys)) == 2 and sample.answer_text not in keys
    needle = sample.prompt_ids[sample.metadata["needle_start"]:sample.metadata["needle_end"]]
    assert sample.answer_text in tokenizer.decode(needle)
    assert sample.metadata["needle_start"] >= 256  # the queried document comes last
    for start, key in zip((0, 128), keys, strict=True):
        decoy = tokenizer.decode(sample.prompt_ids[start:start + 128])
        assert key in decoy  # each decoy is a whole document with its answer in place
        if task == "niah":  # ... asking about the queried word
            assert f"for {sample.metadata['word']} is" in decoy
    assert [tokenizer.decode(ids) for ids in sample.metadata["distractor_ids"]] == keys
    with pytest.raises(ValueError, match="one queried key"):
        make_decoy_sample(tokenizer, "variable_tracking", 512, 50.0, 7)


def test_fixing_the_niah_word_keeps_every_other_draw(tokenizer):
    plain = make_task_sample(tokenizer, "niah", 200, 30.0, 5, key_digits=2)
    fixed = make_task_sample(tokenizer, "niah", 200, 30.0, 5, key_digits=2, word="raven")
    assert fixed.metadata["word"] == "raven" and fixed.answer_text == plain.answer_text
    with pytest.raises(ValueError, match="word must be one of NIAH_WORDS"):
        make_task_sample(tokenizer, "niah", 200, 30.0, 5, word="zebra")


def test_rows_without_distractors_hold_one_retrieval_document(tokenizer):
    """`task_distractors=False` (the packing claim's control): one retrieval document per row,
    the rest natural documents; with distractors most rows hold more than one."""
    counts = {True: [], False: []}
    for distractors in (True, False):
        for seed in range(20):
            row = packed_task_row(tokenizer, config("direct", task_distractors=distractors),
                                  np.random.default_rng(seed), seed, True)
            counts[distractors].append(int(row.maskable.sum()) // 2)
    assert counts[False] == [1] * 20
    assert sum(count > 1 for count in counts[True]) >= 5
