"""The token cache, prepared once: keyed by the corpus bytes and the tokenizer (a corpus
overwritten in place is tokenized again), its files checked against the sha256 its manifest
records, prepared by `minillada prepare` in one process and refused under torchrun when missing,
stale or damaged, naming the command to run."""

from __future__ import annotations

import io
import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
from llada_checkpoint import write_corpus, write_released_checkpoint

from minillada import cli
from minillada.data.corpus import load_corpus, split_corpus
from minillada.data.token_cache import DamagedTokenCacheError, prepare_token_cache, token_cache
from minillada.modeling.distributed import Runtime
from minillada.released.token_roles import load_released_tokenizer
from minillada.training.config import make_config
from minillada.training.run_setup import prepare_command, run_token_cache
from minillada.training.trainer import Trainer

ONE = Runtime(0, 1, torch.device("cpu"), False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))


def run_config(tmp_path, released, corpus, name="run", **extra):
    return make_config("llada-8b", "extend", tmp_path / name, init=str(released),
                       corpus=str(corpus), seq_len=64, attention_backend="per_document",
                       dtype="float32", steps=1, val_rows=2, progress=False, **extra)


def rewrite_one_document(corpus, split: str) -> None:
    """Overwrite `corpus` in place, one document of `split` changed (and still in `split`: a
    document's split follows a hash of its text)."""
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    chosen = getattr(split_corpus(texts), split)[0]
    edited = next(chosen + " river" * n for n in range(1, 200)
                  if getattr(split_corpus([chosen + " river" * n]), split))
    changed = [edited if text == chosen else text for text in texts]
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in changed))
    assert getattr(split_corpus(load_corpus(corpus)), split) != getattr(split_corpus(texts),
                                                                        split)


@pytest.mark.parametrize("split", ["validation", "train"])
def test_a_corpus_overwritten_in_place_is_tokenized_again(tmp_path, split):
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    config = run_config(tmp_path, released, corpus)
    before = Trainer(config, ONE)
    before.close()
    rewrite_one_document(corpus, split)
    after = Trainer(run_config(tmp_path, released, corpus, "next"), ONE)
    after.close()
    caches = sorted(p.parent for p in (tmp_path / "cache" / "tokens").glob("*/manifest.json"))
    assert len(caches) == 2  # the next run built a cache of the new content
    train_rows = [t.source.rows.select(slice(None)).tokens for t in (before, after)]
    val_rows = [t.val_rows.tokens for t in (before, after)]
    if split == "validation":  # the run trains on what it trained on, validates on the new text
        assert torch.equal(*train_rows) and not torch.equal(*val_rows)
    else:
        assert not torch.equal(*train_rows)


def test_a_damaged_cache_is_refused_naming_its_file(tmp_path):
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = str(write_corpus(tmp_path / "corpus.jsonl"))
    tokenizer = load_released_tokenizer(released)[0]
    folder, written = prepare_token_cache(tokenizer, corpus, progress=False)
    assert written and token_cache(tokenizer, corpus, 0, build=False) == folder
    tokens = folder / "train" / "tokens.npy"
    intact = tokens.read_bytes()
    tokens.write_bytes(b"")  # emptied
    with pytest.raises(DamagedTokenCacheError, match=f"{tokens} is not the file "
                                                     f"{folder}/manifest.json records \\(0 bytes"):
        token_cache(tokenizer, corpus, 0)
    shape = np.load(io.BytesIO(intact)).shape
    np.save(tokens, np.random.default_rng(0).integers(0, 300, shape, dtype=np.int32))
    assert tokens.stat().st_size == len(intact)  # random ids of the right shape
    with pytest.raises(DamagedTokenCacheError, match=f"{tokens} is not the file"):
        token_cache(tokenizer, corpus, 0)
    config = run_config(tmp_path, released, corpus)
    with pytest.raises(ValueError, match=r"is not the file .* the token cache is damaged; .*"
                                         r"`minillada prepare --corpus .* --tokenizer "):
        Trainer(config, ONE)
    assert not (tmp_path / "run").exists()
    (folder / "manifest.json").write_text("{")
    with pytest.raises(DamagedTokenCacheError, match=f"{folder}/manifest.json is unreadable"):
        token_cache(tokenizer, corpus, 0)
    assert prepare_token_cache(tokenizer, corpus, progress=False) == (folder, True)  # rewritten
    assert tokens.read_bytes() == intact


@pytest.fixture
def one_rank_group():
    """A process group of this process alone: a runtime that takes the torchrun code path."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        yield Runtime(0, 1, torch.device("cpu"), True)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_under_torchrun_a_cache_is_prepared_first_and_never_stale(tmp_path, capsys,
                                                                  one_rank_group):
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    config = run_config(tmp_path, released, corpus)
    command = prepare_command(config)
    assert command == (f"minillada prepare --corpus {corpus} --tokenizer {released}")
    tokenizer = load_released_tokenizer(released)[0]
    with pytest.raises(ValueError, match=r"no prepared token cache of corpus .* run "
                                         f"`{command}` first"):
        run_token_cache(tokenizer, config, one_rank_group)
    assert not (tmp_path / "cache" / "tokens").exists()  # the ranks did not tokenize
    assert cli.main([*command.split()[1:], "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "split seed 0, written:" in printed and "train " in printed
    folder = run_token_cache(tokenizer, config, one_rank_group)
    assert folder == token_cache(tokenizer, str(corpus), 0)
    assert cli.main([*command.split()[1:], "--quiet"]) == 0  # a second time: checked, kept
    assert f"already prepared, its files checked: {folder}" in capsys.readouterr().out
    rewrite_one_document(corpus, "train")
    with pytest.raises(ValueError, match=f"the cache in '{folder}' is stale \\(the corpus "
                                         "changed since it was prepared"):
        run_token_cache(tokenizer, config, one_rank_group)


def test_the_prepare_command_names_each_run_kind(tmp_path):
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    assert prepare_command(make_config("cpu", "pretrain", tmp_path / "a")) == (
        "minillada prepare --preset cpu")
    assert prepare_command(make_config("cpu", "pretrain", tmp_path / "a", corpus=str(corpus),
                                       split_seed=3, model={"vocab_size": 1024})) == (
        f"minillada prepare --corpus {corpus} --preset cpu --vocab-size 1024 --split-seed 3")
    assert prepare_command(run_config(tmp_path, released, corpus)) == (
        f"minillada prepare --corpus {corpus} --tokenizer {released}")
