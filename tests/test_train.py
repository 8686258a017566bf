"""The trainer: schedules, exact resume, atomic checkpoints, bad input, the CLI stages."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp

from minillada import cli
from minillada.common.seeds import derived_seed
from minillada.data.corpus import get_tokenizer
from minillada.modeling.diffusion import diffusion_loss
from minillada.modeling.distributed import Runtime
from minillada.modeling.model import LLaDAModelLM
from minillada.training import batches, trainer
from minillada.training.batches import BatchSource, answer_only_rows, packed_rows
from minillada.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
)
from minillada.training.config import (
    TrainConfig,
    answer_only_fraction_at,
    curriculum_progress,
    incompatible_fields,
    lr_at,
    make_config,
    prepare_run,
    task_fraction_at,
)
from minillada.training.trainer import train

# A few steps of the smoke model exercising every data path: task rows, answer-only masking,
# randomly cut steps, epochs of a tiny corpus, micro-batches, validation, checkpoints.
TINY = dict(steps=6, batch_size=4, micro_batch_size=2, warmup_steps=2, save_every=2,
            val_every=3, val_rows=4, val_task_rows=2, task_fraction=0.5,
            answer_only_fraction=0.5, random_length_fraction=0.3, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def losses(out) -> list[float]:
    return [record["loss"] for record in read_metrics(out)]


# ------------------------------------------------------------------------------ schedules


def test_lr_warmup_then_wsd_closed_form():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule="wsd", decay_fraction=0.2,
                         min_lr_ratio=0.1)
    assert [lr_at(config, s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_at(config, 9) == pytest.approx(1.0)
    assert lr_at(config, 50) == lr_at(config, 79) == pytest.approx(1.0)  # stable
    assert lr_at(config, 80) == pytest.approx(1.0 - 0.9 / 20)  # first decay step
    assert lr_at(config, 99) == pytest.approx(0.1)  # last step runs at the floor


def test_lr_cosine_closed_form():
    config = TrainConfig(steps=110, lr=2.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.0)
    assert lr_at(config, 59) == pytest.approx(1.0)  # half-way: (1 + cos(pi/2)) / 2
    assert lr_at(config, 34) == pytest.approx(1.0 + math.cos(math.pi / 4))
    assert lr_at(config, 109) == pytest.approx(0.0, abs=1e-12)


def test_task_fraction_curriculum():
    config = TrainConfig(steps=100, task_fraction=0.5, task_fraction_final=0.1,
                         task_curriculum_steps=11)
    assert task_fraction_at(config, 0) == 0.5
    assert task_fraction_at(config, 5) == pytest.approx(0.3)
    assert task_fraction_at(config, 10) == task_fraction_at(config, 99) == pytest.approx(0.1)
    assert task_fraction_at(TrainConfig(task_fraction=0.2), 7) == 0.2


def test_derived_seed_is_stable_and_distinct():
    assert derived_seed(0, "mask", 3) == derived_seed(0, "mask", 3)
    seeds = {derived_seed(s, p, k) for s in (0, 1) for p in ("mask", "batch")
             for k in range(50)}
    assert len(seeds) == 200


def test_loss_decreases_over_a_smoke_pretrain(tmp_path):
    """The smoke preset's 40 pre-training steps learn: the mean loss of the last 10 steps is
    well below that of the first 10."""
    train(make_config("smoke", "pretrain", tmp_path, progress=False))
    loss = losses(tmp_path)
    assert len(loss) == 40
    first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
    assert last < first - 0.5, (first, last)


def test_chunked_masked_loss_trains_like_the_full_row_loss(tmp_path):
    """loss_chunk computes the same loss (training and validation) without the rows' logits:
    equal at float32 rounding, step after step."""
    settings = {**TINY, "steps": 3, "dtype": "float32"}
    train(make_config("smoke", "pretrain", tmp_path / "full", **settings))
    train(make_config("smoke", "pretrain", tmp_path / "chunked", **settings, loss_chunk=16))
    full, chunked = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "chunked")
    for name in ("loss", "grad_norm", "val_loss"):
        want = [r[name] for r in full if name in r]
        assert [r[name] for r in chunked if name in r] == pytest.approx(want, rel=1e-4), name


def test_the_default_loss_is_the_full_row_diffusion_loss_bit_for_bit(tmp_path):
    """loss_chunk = 0 (every preset) computes exactly the expression the trainer always had."""
    config = make_config("smoke", "pretrain", tmp_path, **{**TINY, "dtype": "float32"})
    runtime = Runtime(rank=0, world=1, device=torch.device("cpu"), distributed=False)
    run = trainer.Trainer(config, runtime)
    try:
        rows, _ = run.source.batch(0)
        noised = batches.noise(rows, config, run.mask_token_id, 0)
        logits = run.model(noised.noisy_ids, positions=rows.positions.long(),
                           doc_ids=run.strategy.attention_doc_ids(rows.doc_ids.long())).logits
        expected = diffusion_loss(logits.float(), rows.tokens.long(), noised.masked,
                                  noised.p_mask, row_tokens=batches.row_tokens(rows))
        assert torch.equal(run._loss(rows, noised), expected)
    finally:
        run.close()


def test_a_field_added_since_a_checkpoint_counts_as_its_default(tmp_path):
    config = make_config("smoke", "pretrain", tmp_path)
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    del saved["loss_chunk"], saved["rows_on_demand"]  # written before these fields existed
    assert incompatible_fields(saved, config) == []
    assert incompatible_fields(saved, dataclasses.replace(config, loss_chunk=8)) == ["loss_chunk"]


# ------------------------------------------------------------------------------ resume


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, monkeypatch):
    straight = make_config("smoke", "pretrain", tmp_path / "straight", **TINY)
    train(straight)

    interrupted = make_config("smoke", "pretrain", tmp_path / "interrupted", **TINY)
    real_step = trainer.Trainer.train_step

    def crash_in_step_five(self):
        if self.step == 4:
            raise KeyboardInterrupt  # after step 4 was logged and checkpointed
        return real_step(self)

    monkeypatch.setattr(trainer.Trainer, "train_step", crash_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    monkeypatch.setattr(trainer.Trainer, "train_step", real_step)
    assert latest_checkpoint(tmp_path / "interrupted").name == "step_000004"
    train(interrupted, resume=True)

    assert losses(tmp_path / "interrupted") == losses(tmp_path / "straight")  # exactly
    assert [r["step"] for r in read_metrics(tmp_path / "interrupted")] == [1, 2, 3, 4, 5, 6]
    assert sum(r["task_rows"] for r in read_metrics(tmp_path / "straight")) > 0
    a = LLaDAModelLM.from_pretrained(tmp_path / "straight" / "model").state_dict()
    b = LLaDAModelLM.from_pretrained(tmp_path / "interrupted" / "model").state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_resume_refuses_a_different_config_naming_the_fields(tmp_path):
    train(make_config("smoke", "pretrain", tmp_path, **{**TINY, "steps": 2}))
    changed = make_config("smoke", "pretrain", tmp_path, **{**TINY, "steps": 2, "lr": 1e-3,
                                                             "batch_size": 2, "val_every": 1})
    with pytest.raises(ValueError, match=r"batch_size: 4 -> 2, lr: 0.003 -> 0.001$"):
        train(changed, resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(make_config("smoke", "pretrain", tmp_path, **{**TINY, "steps": 2}))


# ------------------------------------------------------------------------------ checkpoints


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    one = Runtime(rank=0, world=1, device=torch.device("cpu"), distributed=False)

    def save(step, weights):
        return save_checkpoint(tmp_path, {"weights": weights},
                               {"step": step, "tokens": 0, "corpus_cursor": 0}, 2, one)

    save(1, torch.ones(3))
    real_save = dcp.save

    def crash_half_way(state, *, storage_writer, **kwargs):
        real_save(state, storage_writer=storage_writer, **kwargs)
        with open(storage_writer.path / "__0_0.distcp", "ab") as torn:
            torn.write(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(dcp, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save(2, torch.zeros(3))
    monkeypatch.setattr(dcp, "save", real_save)

    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000001"
    loaded = {"weights": torch.zeros(3)}
    assert load_checkpoint(latest, loaded)["step"] == 1
    assert torch.equal(loaded["weights"], torch.ones(3))
    # The next save succeeds over the torn temporary folder and prunes to `keep`.
    for step in (2, 3):
        save(step, torch.zeros(3))
    assert latest_checkpoint(tmp_path).name == "step_000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest", "step_000002", "step_000003"]


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"packing": "zigzag"}, ValueError, "unknown packing 'zigzag'; choose one of direct"),
        ({"schedule": "step"}, ValueError, "unknown schedule 'step'; choose one of cosine, wsd"),
        ({"tasks": ["sudoku"]}, ValueError, r"unknown task\(s\) \['sudoku'\]"),
        ({"seq_len": 1}, ValueError, "seq_len must be >= 2, got 1"),
        ({"task_fraction": 1.5}, ValueError, r"task_fraction must lie in \[0, 1\], got 1.5"),
        ({"rope": "ntk"}, ValueError, "stage 'pretrain' trains at T_train with rope 'default'"),
        ({"corpus": "/no/such/corpus.jsonl"}, FileNotFoundError, "/no/such/corpus.jsonl"),
        ({"learning_rate": 1.0}, ValueError, r"unknown TrainConfig field\(s\) \['learning_rate'\]"),
    ],
)
def test_bad_pretrain_config_is_named(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        prepare_run(make_config("smoke", "pretrain", tmp_path, **overrides))


def test_bad_names_and_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown preset 'tiny'; choose one of \['cpu'"):
        make_config("tiny", "pretrain", tmp_path)
    with pytest.raises(ValueError, match="unknown stage 'finetune'; choose one of pretrain"):
        make_config("smoke", "finetune", tmp_path)
    with pytest.raises(ValueError, match="stage 'extend' needs init"):
        make_config("smoke", "extend", tmp_path)
    missing = make_config("smoke", "extend", tmp_path, init="/no/such/run")  # a value
    with pytest.raises(FileNotFoundError, match="no model at '/no/such/run'"):
        prepare_run(missing)  # the files the run reads
    with pytest.raises(ValueError, match="unknown rope 'ntk2'; choose one of default"):
        make_config("smoke", "extend", tmp_path, init="/no/such/run", rope="ntk2")


def test_batch_must_split_over_ranks(tmp_path):
    config = make_config("smoke", "pretrain", tmp_path, batch_size=3, val_rows=4)
    runtime = Runtime(rank=0, world=2, device=torch.device("cpu"), distributed=False)
    with pytest.raises(ValueError, match=r"batch_size \(3\).*world size \(2\)"):
        trainer.Trainer(config, runtime)


# ------------------------------------------------------------------------------ the CLI


def test_cli_pretrain_then_extend(tmp_path, capsys):
    pretrain, extend = tmp_path / "pretrain", tmp_path / "extend"
    assert cli.main(["train", "--preset", "smoke", "--stage", "pretrain", "--out", str(pretrain),
                     "--steps", "4", "--quiet", "--set", "save_every=2"]) == 0
    assert capsys.readouterr().out.strip() == str(pretrain / "model")
    assert cli.main(["train", "--preset", "smoke", "--stage", "extend", "--init", str(pretrain),
                     "--rope", "diffusion_ntk", "--packing", "adaptive", "--target-len", "128",
                     "--steps", "2", "--out", str(extend), "--quiet"]) == 0

    model = LLaDAModelLM.from_pretrained(extend / "model")
    assert (model.config.rope_variant, model.config.rope_target_len) == ("diffusion_ntk", 128)
    assert model.config.max_sequence_length == 64  # T_train stays the pre-training length
    saved = json.loads((extend / "config.json").read_text())
    assert (saved["packing"], saved["seq_len"], saved["stage"]) == ("adaptive", 128, "extend")
    records = read_metrics(extend)
    assert [r["step"] for r in records] == [1, 2] and "val_loss" in records[-1]
    assert all(math.isfinite(r["loss"]) for r in records)


def test_a_cut_step_is_a_prefix_of_corpus_rows_and_never_holds_task_rows():
    tokens = torch.arange(8 * 16, dtype=torch.int32).view(8, 16)
    rows = batches.Rows(tokens, torch.zeros_like(tokens), torch.zeros_like(tokens),
                        torch.ones(8, 16, dtype=torch.bool))
    never = batches.BatchSource(rows, TrainConfig(seq_len=16, batch_size=4,
                                                  random_length_fraction=0.0), tokenizer=None)
    assert {never.batch(step)[0].tokens.shape[1] for step in range(30)} == {16}
    # Every step cut; task rows asked for, but a cut retrieval row would lose its answer.
    config = TrainConfig(seq_len=16, batch_size=4, random_length_fraction=1.0, task_fraction=0.5)
    always, lengths = batches.BatchSource(rows, config, tokenizer=None), set()
    for step in range(30):
        batch, task_rows = always.batch(step)
        length = batch.tokens.shape[1]
        assert task_rows == 0 and 1 <= length <= 16
        assert torch.equal(batch.tokens, tokens[batch.tokens[:, 0].long() // 16, :length])
        lengths.add(length)
    assert len(lengths) > 5


def test_answer_only_rows_are_normalised_by_their_answer_length():
    tokens = torch.zeros(3, 6, dtype=torch.int32)
    doc_ids = torch.tensor([[0] * 6, [0] * 6, [0, 0, 0, 0, -1, -1]], dtype=torch.int32)
    maskable = torch.tensor([[True] * 6, [False] * 4 + [True] * 2, [True] * 4 + [False] * 2])
    rows = batches.Rows(tokens, doc_ids, torch.zeros_like(tokens), maskable)
    # corpus row: L; answer-only row: its 2 answer tokens; a padded corpus row stays at L.
    assert batches.row_tokens(rows).tolist() == [6, 2, 6]


def test_answer_only_rows_always_mask_part_of_their_answer():
    tokens = torch.arange(4, 16, dtype=torch.int32).view(2, 6)
    doc_ids = torch.zeros(2, 6, dtype=torch.int32)
    maskable = torch.tensor([[True] * 6, [False] * 4 + [True] * 2])
    rows = batches.Rows(tokens, doc_ids, torch.zeros_like(tokens), maskable)
    config = TrainConfig()
    for seed in range(50):
        noised = batches.noise(rows, config, mask_token_id=0, generator_seed=seed)
        answer = noised.masked[1, 4:]
        assert answer.any() and not noised.masked[1, :4].any()
        assert noised.p_mask[1, 4:][answer].tolist() == [int(answer.sum()) / 2] * int(answer.sum())
        assert torch.equal(noised.noisy_ids[noised.masked], torch.zeros(int(noised.masked.sum()),
                                                                       dtype=torch.long))
    again = batches.noise(rows, config, mask_token_id=0, generator_seed=3)
    assert torch.equal(again.masked, batches.noise(rows, config, 0, 3).masked)  # seeded


def test_curriculum_holds_then_moves_both_fractions():
    """The gated recipe's warm-up: both fractions held for task_curriculum_hold steps, then
    linear to their final values at step task_curriculum_steps - 1."""
    config = TrainConfig(steps=100, task_fraction=1.0, task_fraction_final=0.3,
                         answer_only_fraction=1.0, answer_only_fraction_final=0.5,
                         task_curriculum_hold=20, task_curriculum_steps=41)
    assert [curriculum_progress(config, s) for s in (0, 20, 30, 40, 99)] == pytest.approx(
        [0.0, 0.0, 0.5, 1.0, 1.0])
    assert task_fraction_at(config, 19) == 1.0 and answer_only_fraction_at(config, 19) == 1.0
    assert task_fraction_at(config, 30) == pytest.approx(0.65)
    assert answer_only_fraction_at(config, 30) == pytest.approx(0.75)
    assert answer_only_fraction_at(config, 40) == pytest.approx(0.5)
    assert answer_only_fraction_at(TrainConfig(answer_only_fraction=0.4), 50) == 0.4
    with pytest.raises(ValueError, match=r"task_curriculum_hold must lie in \[0, "
                                         r"task_curriculum_steps or steps = 41\), got 41"):
        TrainConfig(task_curriculum_hold=41, task_curriculum_steps=41).validate()
    with pytest.raises(ValueError, match="answer_only_fraction_final must lie in"):
        TrainConfig(answer_only_fraction_final=1.5).validate()


def test_the_warm_up_steps_hold_answer_only_retrieval_rows_only(tmp_path):
    """During the hold every row of a batch is a retrieval row whose answer alone is maskable."""
    config = make_config("smoke", "pretrain", tmp_path, task_fraction=1.0,
                         task_fraction_final=0.2, answer_only_fraction=1.0,
                         answer_only_fraction_final=0.5, task_curriculum_hold=5,
                         task_curriculum_steps=20, random_length_fraction=0.0)
    tokenizer = get_tokenizer(512)
    source = BatchSource(packed_rows([np.arange(64)] * 4, config, tokenizer), config, tokenizer)
    for step in range(5):
        rows, tasks = source.batch(step)
        assert tasks == len(rows) and answer_only_rows(rows).all()
