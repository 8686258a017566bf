"""Post-training a released LLaDA checkpoint (the `llada-8b` recipe) at toy size, in one process:
its own sizes, tokenizer and token roles in; float32 master weights; a faithful export out."""

from __future__ import annotations

import json

import pytest
import torch
from llada_checkpoint import (
    MODELING_FILES,
    SAFETENSORS_METADATA,
    llada_tokenizer,
    official_logits,
    read_weights,
    released_config,
    write_corpus,
    write_released_checkpoint,
)
from safetensors import safe_open

from minillada.modeling.distributed import Runtime
from minillada.released.export import export_released, shard_plan
from minillada.released.llada import load_llada_checkpoint, scaled_rope_config
from minillada.released.token_roles import TokenRoles, load_released_tokenizer, token_roles
from minillada.training.config import check_run_files, lr_at, make_config
from minillada.training.trainer import Trainer

ONE = Runtime(rank=0, world=1, device=torch.device("cpu"), distributed=False)
# The recipe at toy size: rows of 64 tokens (4x the checkpoint's 16), float32, per-document
# attention (CPU), two steps.
TOY = dict(seq_len=64, steps=2, batch_size=2, micro_batch_size=1, warmup_steps=1, lr=2e-5,
           loss_chunk=16, dtype="float32", attention_backend="per_document", val_rows=2,
           val_every=2, save_every=2, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def released(tmp_path):
    return write_released_checkpoint(tmp_path / "LLaDA-tiny")


@pytest.fixture
def corpus(tmp_path):
    return str(write_corpus(tmp_path / "corpus.jsonl"))


def test_token_roles_come_from_config_json_then_the_tokenizer(released):
    tokenizer, roles = load_released_tokenizer(released)
    fields = json.loads((released / "config.json").read_text())
    assert roles == TokenRoles(mask=fields["mask_token_id"], separator=fields["eos_token_id"],
                               pad=fields["pad_token_id"])
    assert tokenizer.convert_ids_to_tokens([roles.mask, roles.separator]) == [
        "<|mdm_mask|>", "<|endoftext|>"]
    assert (tokenizer.mask_token_id, tokenizer.eod_token_id, tokenizer.pad_token_id) == (
        roles.mask, roles.separator, roles.pad)
    assert len(tokenizer) == len(llada_tokenizer())  # no token added
    plain = llada_tokenizer()
    no_pad = {k: v for k, v in fields.items() if k != "pad_token_id"}  # nor has the tokenizer
    with pytest.raises(ValueError, match=r"names no pad token: config\.json has no pad_token_id "
                                         r"and the tokenizer no pad_token_id"):
        token_roles(no_pad, plain)
    with pytest.raises(ValueError, match=r"mask_token_id 999 is not a token id of its "
                                         r"tokenizer \[0, 324\)"):
        token_roles({**fields, "mask_token_id": 999}, plain)
    with pytest.raises(ValueError, match="the mask token 321 is also the separator"):
        token_roles({**fields, "mask_token_id": fields["eos_token_id"]}, plain)


def test_the_recipe_takes_any_released_checkpoint_and_refuses_what_it_cannot_use(
        released, corpus, tmp_path):
    with pytest.raises(ValueError, match="preset 'llada-8b' post-trains a released LLaDA "
                                         "checkpoint: use stage 'extend'"):
        make_config("llada-8b", "pretrain", tmp_path / "pre")
    config = make_config("llada-8b", "extend", tmp_path / "run", init=str(released),
                         corpus=corpus)
    assert (config.rope, config.packing, config.seq_len, config.loss_chunk) == (
        "diffusion_ntk", "adaptive", 65536, 2048)
    assert lr_at(config, config.warmup_steps - 1) == pytest.approx(config.lr)
    assert lr_at(config, config.steps - 1) == pytest.approx(config.lr * config.min_lr_ratio)
    check_run_files(config)  # the init is a released checkpoint, whole
    with pytest.raises(ValueError, match=r"was not trained at preset 'smoke'.*--preset llada-8b"):
        check_run_files(make_config("smoke", "extend", tmp_path / "smoke", init=str(released)))
    (released / MODELING_FILES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"auto_map names \['modeling_llada.py'\]"):
        check_run_files(config)
    without_mask = write_released_checkpoint(tmp_path / "no-mask", config_changes={
        "mask_token_id": None})
    with pytest.raises(ValueError, match="names no mask token"):
        check_run_files(make_config("llada-8b", "extend", tmp_path / "run",
                                    init=str(without_mask)))


def test_post_training_keeps_float32_masters_and_separates_documents_by_end_of_text(
        released, corpus, tmp_path):
    config = make_config("llada-8b", "extend", tmp_path / "run", init=str(released),
                         corpus=corpus, **{**TOY, "packing": "adaptive_eod", "steps": 1})
    trainer = Trainer(config, ONE)
    try:
        stored = read_weights(released)
        assert {t.dtype for t in stored.values()} == {torch.bfloat16}
        assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
        rows = trainer.source.rows.select(slice(None))  # every training row
        separator = json.loads((released / "config.json").read_text())["eos_token_id"]
        ends = rows.doc_ids[:, :-1] != rows.doc_ids[:, 1:]  # the last token of a document
        real = ends & (rows.doc_ids[:, :-1] >= 0)
        assert real.any() and (rows.tokens[:, :-1][real] == separator).all()
        assert int(rows.tokens.max()) < len(llada_tokenizer())  # no new token
        trainer.train_step()
        state = trainer.optimizer.state
        assert {s["exp_avg"].dtype for s in state.values()} == {torch.float32}
        weight = trainer.model.model.transformer.blocks[0].q_proj.weight
        before = stored["model.transformer.blocks.0.q_proj.weight"].float()
        changed = (weight.detach() != before).float().mean().item()
        assert changed > 0.99  # an lr 2e-5 step moves float32 weights; bf16 ones mostly stay
        assert (weight.detach().bfloat16() == before.bfloat16()).float().mean().item() > 0.5
    finally:
        trainer.close()


def test_the_export_is_what_llada_code_reads_with_the_package_logits(released, corpus,
                                                                     tmp_path):
    config = make_config("llada-8b", "extend", tmp_path / "run", init=str(released),
                         corpus=corpus, **TOY)
    trainer = Trainer(config, ONE)
    try:
        exported = trainer.run()
        trained = trainer.model.eval()
    finally:
        trainer.close()
    init_fields = json.loads((released / "config.json").read_text())
    fields = json.loads((exported / "config.json").read_text())
    new_base = scaled_rope_config(init_fields, "diffusion_ntk", 64)["rope_theta"]
    assert fields["rope_theta"] == new_base > 5 * init_fields["rope_theta"]
    assert fields["max_sequence_length"] == 64
    assert fields["minillada_post_training"]["original_rope_theta"] == init_fields["rope_theta"]
    changed = ("rope_theta", "max_sequence_length", "minillada_post_training")
    assert {k: v for k, v in fields.items() if k not in changed} == {
        k: v for k, v in init_fields.items() if k not in changed}
    for name in (*MODELING_FILES, "tokenizer.json", "tokenizer_config.json"):
        assert (exported / name).read_bytes() == (released / name).read_bytes(), name
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    weights = read_weights(exported)
    assert set(index["weight_map"]) == set(weights) == set(read_weights(released))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}

    # The package's trained model (float32 masters) is the export up to bf16 rounding: rounded
    # in place, it gives bit for bit the logits of the export loaded back by the package.
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.copy_(parameter.bfloat16().float())
    ids = torch.randint(0, 324, (2, 96), generator=torch.Generator().manual_seed(3))
    reloaded = load_llada_checkpoint(exported)
    with torch.no_grad():
        package, again = trained(ids).logits, reloaded(ids).logits
    assert torch.equal(package, again)
    # LLaDA's modeling code reading the export (rope_theta from its config.json) agrees.
    torch.testing.assert_close(official_logits(exported, ids), package.double(), atol=1e-4,
                               rtol=1e-4)
    # The original base, which an export that kept it would give, does not.
    (exported / "config.json").write_text(json.dumps(
        {**fields, "rope_theta": init_fields["rope_theta"]}))
    assert (official_logits(exported, ids) - package.double()).abs().max() > 1e-2


def test_export_shards_with_torch_metadata_and_refuses_a_per_pair_rope_variant(released,
                                                                               tmp_path):
    assert shard_plan({"a": 4, "b": 4, "c": 9, "d": 1}, 8) == {
        "a": "model-00001-of-00003.safetensors", "b": "model-00001-of-00003.safetensors",
        "c": "model-00002-of-00003.safetensors", "d": "model-00003-of-00003.safetensors"}
    model = load_llada_checkpoint(released)
    export_released(model, released, tmp_path / "out", ONE, max_shard_bytes=4000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 3 and all((tmp_path / "out" / f).is_file() for f in files)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * 2 for t in read_weights(released).values())
    # transformers' loader (LLaDA's code's) refuses safetensors files without {"format": "pt"}.
    for file in [*released.glob("*.safetensors"), *(tmp_path / "out").glob("*.safetensors")]:
        with safe_open(file, framework="pt") as opened:
            assert opened.metadata() == SAFETENSORS_METADATA, file
    model.set_rope("yarn", target_len=64)
    with pytest.raises(ValueError, match="rope variant 'yarn' sets per-pair frequencies"):
        export_released(model, released, tmp_path / "yarn", ONE)
    assert not (tmp_path / "yarn").exists()
    assert released_config(llada_tokenizer())["vocab_size"] == 336
