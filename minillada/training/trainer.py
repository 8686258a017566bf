"""The trainer: one loop for a single process and for `torchrun` + FSDP2, with exact resume.

    minillada train --preset cpu --stage pretrain --out runs/cpu/pretrain
    minillada train --preset cpu --stage extend --init runs/cpu/pretrain --rope diffusion_ntk \
        --packing adaptive --out runs/cpu/extend-adaptive
    torchrun --nproc_per_node=2 -m minillada train --preset smoke --stage pretrain --out ...

What a run is (`TrainConfig`, stages, schedules) lives in `training.config`; what it starts from
(tokenizer, model, optimizer, each split's rows) in `training.run_setup`; the rows of a step in
`training.batches`; the held-out rows and their scores in `training.heldout`; the run folder on
disk (checkpoints, resume) in `training.checkpoint`; ranks and FSDP2 in `modeling.distributed`.
One optimizer step s, identical on every rank and for any world size:

1. The global batch: `batch_size` rows (`BatchSource.batch`). Corpus rows come in a seeded order
   per epoch, read from a cursor (the data-loader position); a fraction `task_fraction(s)` of rows
   are synthetic retrieval rows instead, and a fraction `random_length_fraction` of steps is cut
   to a random length in [1, seq_len] (LLaDA's 1 %).
2. LLaDA's forward process masks the whole global batch with a generator seeded by (seed, s); each
   rank then keeps its contiguous slice of rows and runs it in micro-batches. Under context
   parallelism the slice is its data-parallel group's, and each of the group's ranks runs its
   shard of every row (`modeling.context_parallel`): the masks, the loss weights and the
   normalisers are the whole rows', drawn and computed before the rows are sharded.
3. loss = sum over micro-batches of diffusion_loss * rows / local rows: the mean over the local
   rows (a context rank: its tokens' part of that sum); FSDP averages gradients over ranks, so
   the gradient is that of the global mean (a context rank's loss is scaled by the degree, as
   its group's ranks hold parts of one sum).
4. Clip the global gradient norm, set lr(s), AdamW step.

Every random draw comes from a generator seeded by (seed, purpose, step, ...), never from global
RNG state: a resumed run redraws exactly what an uninterrupted one draws, whatever the world size.
A checkpoint therefore holds the model, the optimizer, the step, the corpus cursor and the token
count (the learning rate is a pure function of the step), saved sharded with
torch.distributed.checkpoint: a run saved by N processes resumes on M.

A released LLaDA checkpoint (the `llada-8b` recipe, docs/gpu.md) comes in with its own tokenizer
and token roles (`released.token_roles`), in float32 and under torchrun one shard per rank
(`released.sharded_load`), and goes out in LLaDA's released format (`released.export`).

Faults: one trainer per run folder (`run.lock`); a damaged newest checkpoint falls back to the
previous intact one; metrics are cut back to the checkpoint's step (0 without one) whenever a run
starts or resumes, so no step is ever logged twice.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from minillada.common.seeds import derived_seed
from minillada.data.packing import get_strategy
from minillada.modeling.attention import PAD_DOC_ID
from minillada.modeling.diffusion import NoisedBatch, diffusion_loss
from minillada.modeling.distributed import (
    Runtime,
    all_mean,
    all_sum,
    start_runtime,
    stop_runtime,
)
from minillada.modeling.masked_loss import diffusion_loss_weights
from minillada.released.export import export_released
from minillada.released.model_files import model_folder
from minillada.training import heldout
from minillada.training.batches import BatchSource, Rows, noise, row_tokens
from minillada.training.checkpoint import (
    MetricsLog,
    check_resumable,
    export_model,
    lock_run,
    restore_checkpoint,
    resume_candidates,
    save_checkpoint,
    save_config,
    trainer_tensors,
)
from minillada.training.config import TrainConfig, lr_at, prepare_run
from minillada.training.precision import torch_dtype
from minillada.training.presets import get_preset
from minillada.training.run_setup import (
    build_optimizer,
    run_token_cache,
    run_tokenizer,
    split_rows,
    starting_model,
)
from minillada.training.tracking import open_tracker
from minillada.training.walltime import training_pace

log = logging.getLogger(__name__)
Resume = bool | Literal["auto"]
ESTIMATE_AFTER_STEPS = 5  # timed steps (after the first, which warms up) behind the estimate


class Trainer:
    """State of one run; `run()` trains to config.steps and returns the exported model folder."""

    def __init__(self, config: TrainConfig, runtime: Runtime, resume: Resume = False) -> None:
        config = prepare_run(config)
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
        if config.context_parallel != runtime.context_degree:
            raise ValueError(f"context_parallel {config.context_parallel} but the runtime's "
                             f"context degree is {runtime.context_degree} "
                             "(start_runtime(context_parallel))")
        groups = runtime.data_world
        if config.batch_size % groups or config.val_rows % groups or config.val_task_rows % groups:
            raise ValueError(
                f"batch_size ({config.batch_size}), val_rows ({config.val_rows}) and "
                f"val_task_rows ({config.val_task_rows}) must be multiples of the world size "
                + (f"({runtime.world})" if groups == runtime.world else
                   f"/ context_parallel ({runtime.world} / {runtime.context_degree} = {groups})")
            )
        self.config, self.runtime = config, runtime
        self.out = Path(config.out)
        self.fresh = not self.out.exists()
        self.lock = lock_run(self.out, self.runtime)
        try:
            self._setup(resume)
        except BaseException:
            self._remove_if_fresh()
            raise

    def _setup(self, resume: Resume) -> None:
        config, runtime = self.config, self.runtime
        candidates = resume_candidates(self.out, resume, runtime.is_main)
        if candidates:
            check_resumable(self.out, config)
        self.released = get_preset(config.preset).released
        self.tokenizer = run_tokenizer(config)
        self.strategy = get_strategy(config.packing)
        precision = torch_dtype(config.dtype)
        fsdp_precision = runtime.distributed and runtime.device.type == "cuda"
        self.model = starting_model(config, self.tokenizer, runtime,
                                    precision if fsdp_precision else None)
        self.mask_token_id = (self.tokenizer.mask_token_id if self.released
                              else self.model.config.mask_token_id)
        use_autocast = precision != torch.float32 and not fsdp_precision
        self.autocast = (torch.autocast(runtime.device.type, dtype=precision) if use_autocast
                         else nullcontext())
        self.optimizer = build_optimizer(self.model, config)
        cache = run_token_cache(self.tokenizer, config, runtime)
        self.source = BatchSource(split_rows(cache, self.tokenizer, config, "train"), config,
                                  self.tokenizer)
        self.val_rows = (heldout.held_out_rows(
            split_rows(cache, self.tokenizer, config, "validation"), config, runtime.data_world)
            if config.val_rows else None)
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.step, self.tokens = 0, 0
        if candidates:
            state = restore_checkpoint(self.out, candidates, self.model, self.optimizer, runtime)
            self.step, self.tokens = state["step"], state["tokens"]
            self.source.cursor = state["corpus_cursor"]
            log.info("resumed %s at step %d", self.out, self.step)
        if runtime.is_main:  # what a killed run logged past its checkpoint is logged again
            self.metrics.truncate_after(self.step)

    def close(self) -> None:
        """Release the run folder's lock (the OS releases it too if the process dies)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def _remove_if_fresh(self) -> None:
        """After a failure before the first step is done: a run folder this run created holds
        nothing to resume (its config, lock, tracker), so a refused run leaves nothing behind."""
        self.close()
        if self.fresh and self.runtime.is_main:
            shutil.rmtree(self.out, ignore_errors=True)

    # -- one step ------------------------------------------------------------------------------

    def _local(self, rows: Rows, noised: NoisedBatch) -> Iterator[tuple[Rows, NoisedBatch, float]]:
        """This rank's contiguous slice of the global rows (its data-parallel group's) in
        micro-batches, each with its weight rows / local rows."""
        per_rank = len(rows) // self.runtime.data_world
        start = self.runtime.data_rank * per_rank
        size = self.config.micro_batch_size
        for first in range(start, start + per_rank, size):
            index = slice(first, min(first + size, start + per_rank))
            part = NoisedBatch(*(t[index] for t in noised))
            yield rows.select(index), part, (index.stop - index.start) / per_rank

    def _inputs(self, tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """[B, L] tensors on the device; under context parallelism this rank's shard of each,
        the padding a document of its own that no loss sees (no doc ids: one document)."""
        context, device = self.runtime.context, self.runtime.device
        if context is None:
            return {name: None if t is None else t.to(device) for name, t in tensors.items()}
        if "doc_ids" in tensors and tensors["doc_ids"] is None:
            tensors["doc_ids"] = torch.zeros_like(tensors["input_ids"])
        fills = {"input_ids": self.tokenizer.pad_token_id, "doc_ids": PAD_DOC_ID, "masked": False,
                 "p_mask": 1.0}
        return {name: context.shard(t.to(device), fills.get(name, 0))
                for name, t in tensors.items()}

    def _loss(self, rows: Rows, noised: NoisedBatch) -> torch.Tensor:
        """`diffusion_loss` of the rows; with `loss_chunk`, computed by the model on the masked
        positions only (`masked_loss`): the same sum, without the logits of the whole rows.
        Under context parallelism, this rank's tokens' part of it (the rows' normalisers and
        weights are the whole rows')."""
        masked, p_mask = noised.masked, noised.p_mask
        normaliser = row_tokens(rows)
        tensors = dict(input_ids=noised.noisy_ids, positions=rows.positions.long(),
                       doc_ids=self.strategy.attention_doc_ids(rows.doc_ids.long()),
                       targets=rows.tokens.long(), masked=masked, p_mask=p_mask)
        if self.config.loss_chunk:  # each masked token's weight, placed where it is in the rows
            weights = diffusion_loss_weights(masked, p_mask, normaliser)
            tensors["weights"] = torch.zeros(masked.shape).masked_scatter(masked, weights)
        step = self._inputs(tensors)
        inputs = dict(positions=step["positions"], doc_ids=step["doc_ids"])
        masked = step["masked"]
        if self.config.loss_chunk:
            with self.autocast:
                return self.model(
                    step["input_ids"], **inputs, scored=masked, labels=step["targets"][masked],
                    label_weights=step["weights"][masked], loss_chunk=self.config.loss_chunk).loss
        with self.autocast:
            logits = self.model(step["input_ids"], **inputs).logits
        return diffusion_loss(logits.float(), step["targets"], masked, step["p_mask"],
                              row_tokens=normaliser.to(self.runtime.device))

    def train_step(self) -> dict[str, Any]:
        config, step = self.config, self.step
        started = time.perf_counter()
        rows, task_rows = self.source.batch(step)
        noised = noise(rows, config, self.mask_token_id, derived_seed(config.seed, "mask", step))
        self.model.train()
        loss = torch.zeros((), device=self.runtime.device)
        # FSDP averages gradients over all ranks; a context group's ranks hold parts of one sum.
        parts = self.runtime.context_degree
        for part_rows, part_noised, weight in self._local(rows, noised):
            micro_loss = self._loss(part_rows, part_noised) * weight
            (micro_loss * parts if parts > 1 else micro_loss).backward()
            loss += micro_loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf
        )
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        lr = lr_at(config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_tokens = int((rows.doc_ids >= 0).sum())
        self.tokens += step_tokens
        self.step += 1
        seconds = time.perf_counter() - started
        return {"step": self.step, "loss": all_mean(loss, self.runtime), "lr": lr,
                "grad_norm": float(grad_norm), "tokens": self.tokens,
                "tokens_per_s": step_tokens / seconds, "seq_len": rows.tokens.shape[1],
                "task_rows": task_rows}

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out masked-diffusion loss (fixed rows and masks); with val_task_rows, the answer
        accuracy on held-out task rows whose answer is fully masked (one forward pass)."""
        self.model.eval()
        results: dict[str, float] = {}
        if self.val_rows is not None:
            noised = noise(self.val_rows, self.config, self.mask_token_id,
                           derived_seed(self.config.split_seed, "val_mask"))
            total = sum(self._loss(r, n) * w for r, n, w in self._local(self.val_rows, noised))
            results["val_loss"] = all_mean(total, self.runtime)
        if self.config.val_task_rows:
            results.update(self._validate_tasks())
        self.model.train()
        return results

    def _validate_tasks(self) -> dict[str, float]:
        rows = heldout.task_rows(self.tokenizer, self.config)
        counts = torch.zeros(3)  # `answer_counts` summed over this rank's task rows
        masked = heldout.answer_masked(rows, self.mask_token_id)
        context = self.runtime.context
        for part_rows, part, _ in self._local(rows, masked):
            step = self._inputs(dict(input_ids=part.noisy_ids,
                                     positions=part_rows.positions.long(),
                                     doc_ids=None))  # one document per task row
            with self.autocast:
                logits = self.model(step["input_ids"], positions=step["positions"],
                                    doc_ids=step["doc_ids"]).logits
            predicted = logits.argmax(-1)
            if context is not None:
                predicted = context.unshard(predicted, part_rows.tokens.shape[1])
            if context is None or context.rank == 0:  # a group's rows are counted once
                counts += heldout.answer_counts(predicted.cpu(), part_rows)
        counts = all_sum(counts.to(self.runtime.device), self.runtime)
        return heldout.task_scores(counts, self.config)

    # -- run -----------------------------------------------------------------------------------

    def _save(self) -> None:
        tensors, _ = trainer_tensors(self.model, self.optimizer)
        state = {"step": self.step, "tokens": self.tokens, "corpus_cursor": self.source.cursor}
        save_checkpoint(self.out, tensors, state, self.config.keep_checkpoints, self.runtime)

    def _announce_estimate(self, bar: tqdm, step: int, tokens: int, started: float) -> None:
        """Say, once, the measured pace and the expected wall time of the steps left."""
        message = training_pace(self.config, step, self.step, self.tokens - tokens,
                                time.perf_counter() - started)
        if bar.disable:
            log.info(message)
        else:
            bar.write(message)

    def run(self) -> Path:
        """Train to config.steps and export; returns the model folder. A run folder this run
        created is removed if it fails before its first step is done (nothing to resume)."""
        try:
            return self._run()
        except BaseException:
            if self.step == 0:
                self._remove_if_fresh()
            raise

    def _run(self) -> Path:
        config, runtime = self.config, self.runtime
        if runtime.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.out, config)
        runtime.barrier()
        bar = tqdm(total=config.steps, initial=self.step, desc=f"{config.stage} {config.preset}",
                   disable=not (config.progress and runtime.is_main), dynamic_ncols=True)
        timed_from: tuple[int, int, float] | None = None  # (step, tokens, time) after warm-up
        tracker = open_tracker(config.log, self.out, self.step, runtime.is_main)
        while self.step < config.steps:
            record = self.train_step()
            if timed_from is None:
                timed_from = (self.step, self.tokens, time.perf_counter())
            elif self.step - timed_from[0] == ESTIMATE_AFTER_STEPS and runtime.is_main:
                self._announce_estimate(bar, *timed_from)
            if self.step % config.val_every == 0 or self.step == config.steps:
                record.update(self.validate())
            if runtime.is_main:
                self.metrics.append(record)
                tracker.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            if self.step % config.save_every == 0 or self.step == config.steps:
                self._save()
        bar.close()
        tracker.close()
        if self.released:
            export_released(self.model, model_folder(config.init), self.out / "model", runtime)
        else:
            export_model(self.model, self.tokenizer, self.out / "model", runtime)
        return self.out / "model"


def train(config: TrainConfig, resume: Resume = False) -> Path:
    """Train the run `config` describes; returns the exported model folder.

    `resume`: False starts a new run (an existing run in config.out is an error); True continues
    its latest intact checkpoint (no run there is an error); "auto" continues one if there is
    one, else starts. Launched by torchrun, every rank calls this and the model is FSDP2-sharded
    over them. The config is prepared first (`config.prepare_run`: its files checked, its dtype
    resolved), before any process group starts.
    """
    config = prepare_run(config)
    runtime = start_runtime(config.context_parallel)
    try:
        trainer = Trainer(config, runtime, resume)
        try:
            return trainer.run()
        finally:
            trainer.close()
    finally:
        stop_runtime(runtime)
