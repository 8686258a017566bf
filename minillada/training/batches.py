"""The rows a training step sees: documents packed into rows, synthetic retrieval rows, the global
batch of each step (`BatchSource`, a pure function of the seed, the step and the corpus cursor)
and LLaDA's forward process on it (`noise`).

LLaDA's 1 % random-length batches are drawn here, in `BatchSource.batch`: with probability
`random_length_fraction` a step is cut to a length l ~ U{1..seq_len} (and then has no task rows,
whose answer a cut would lose).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minillada.common.seeds import derived_seed
from minillada.data.packing import PACKING_STRATEGIES, pack_documents
from minillada.data.tasks import SampleMaker, sample_maker
from minillada.data.token_cache import documents_of, token_cache
from minillada.modeling.diffusion import NoisedBatch, forward_process, mask_exactly
from minillada.training.config import TrainConfig, answer_only_fraction_at, task_fraction_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rows:
    """Rows of equal length: tokens, document ids (-1 = padding), positions, and which tokens
    the forward process may mask."""

    tokens: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor
    maskable: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.tokens, self.doc_ids, self.positions, self.maskable

    def select(self, index: slice | torch.Tensor) -> Rows:
        return Rows(*(t[index] for t in self.tensors()))

    def cut(self, length: int) -> Rows:
        return Rows(*(t[:, :length] for t in self.tensors()))

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(torch.cat(ts) for ts in zip(*(p.tensors() for p in parts), strict=True)))



def packed_rows(docs: list[np.ndarray], config: TrainConfig, tokenizer) -> Rows:
    """Documents packed into rows of seq_len under the configured strategy (int32 storage)."""
    packed = pack_documents(
        [doc.tolist() for doc in docs], config.seq_len, config.packing,
        eod_token_id=tokenizer.eod_token_id, pad_token_id=tokenizer.pad_token_id,
        restart_positions=config.restart_positions,
    )
    return Rows(
        packed.tokens.int(), packed.doc_ids.int(), packed.positions.int(), packed.doc_ids >= 0
    )


def run_samples(tokenizer, config: TrainConfig, split: str = "train") -> SampleMaker:
    """The run's retrieval samples (`tasks.sample_maker`): its keys, NIAH haystacks from `split`
    of its corpus (train rows never see held-out text)."""
    return sample_maker(tokenizer, key_kind=config.task_key_kind,
                        key_digits=config.task_key_digits, corpus=config.corpus, split=split,
                        split_seed=config.split_seed)


def task_row(tokenizer, config: TrainConfig, task: str, length: int, depth: float, seed: int,
             answer_only: bool, split: str = "train") -> Rows:
    """One synthetic retrieval sample of exactly `length` tokens, one document; maskable: every
    token, or only the answer (SFT-style) when `answer_only`."""
    sample = run_samples(tokenizer, config, split)(task, length, depth, seed)
    ids = torch.tensor(sample.input_ids, dtype=torch.int32)
    if len(ids) != length:
        raise ValueError(f"task {task!r} gave {len(ids)} tokens for length {length}")
    maskable = torch.tensor(sample.answer_mask if answer_only else [True] * length)
    return Rows(ids[None], torch.zeros(1, length, dtype=torch.int32),
                torch.arange(length, dtype=torch.int32)[None], maskable[None])


def natural_documents(tokenizer, corpus: str, split_seed: int) -> list[np.ndarray]:
    """The train split's documents (token arrays) that packed task rows draw from, read once
    per token cache (a corpus changed in place is another cache, read anew)."""
    return _documents_in(token_cache(tokenizer, corpus, split_seed, "train"))


@functools.lru_cache(maxsize=4)
def _documents_in(split_folder: Path) -> list[np.ndarray]:
    return documents_of(split_folder)


def packed_task_row(tokenizer, config: TrainConfig, rng: np.random.Generator, seed: int,
                    answer_only: bool) -> Rows:
    """A row of seq_len tokens packing retrieval documents of U{lo..hi} tokens (`task_lengths`)
    with natural documents of the train split, laid out by `config.packing` and
    `config.restart_positions` (UltraLLaDA packs natural documents into its long rows).

    The documents are drawn the same way whatever the layout, so every packing of one seed sees
    the same documents in the same order: a retrieval document first; then, while the documents
    hold fewer than seq_len tokens, another retrieval document (a distractor carrying another
    key) with probability 1/2 if it would end at least one token before the row end even with a
    separator after every document, else a natural document (a whole train document, or the
    seq_len-token chunk of a longer one that starts at a random multiple of seq_len). The packed
    stream is cut at seq_len, so only a natural document is ever cut (with separators, the row
    ends earlier in it). Under `direct` and `eod` every query can see the other documents; under
    `adaptive` it cannot. With `task_distractors` off a row holds one retrieval document, the
    rest natural ones (no neighbour asks the same question). Answer-only: only the answers are
    maskable.
    """
    low, high = config.task_lengths
    natural = natural_documents(tokenizer, config.corpus, config.split_seed)
    make_sample = run_samples(tokenizer, config)
    docs: list[list[int]] = []
    masks: list[list[bool]] = []
    tokens = separated = 0  # the documents' tokens, without and with a separator after each
    while tokens < config.seq_len:
        room = config.seq_len - separated - 2
        if room >= low and (not docs or (rng.random() < 0.5 and config.task_distractors)):
            task = config.tasks[int(rng.integers(len(config.tasks)))]
            size = int(rng.integers(low, min(high, room) + 1))
            sample = make_sample(task, size, float(rng.uniform(0.0, 100.0)),
                                 derived_seed(seed, len(docs)))
            ids, mask = sample.input_ids, sample.answer_mask if answer_only else [True] * size
        else:
            document = natural[int(rng.integers(len(natural)))]
            start = int(rng.integers(len(document))) // config.seq_len * config.seq_len
            ids = document[start:start + config.seq_len].tolist()
            mask = [not answer_only] * len(ids)
        docs.append(ids)
        masks.append(mask)
        tokens += len(ids)
        separated += len(ids) + 1
    strategy = PACKING_STRATEGIES[config.packing]
    packed = pack_documents(docs, config.seq_len, config.packing,
                            eod_token_id=tokenizer.eod_token_id,
                            pad_token_id=tokenizer.pad_token_id,
                            restart_positions=config.restart_positions)
    maskable = [flag for mask in masks
                for flag in [*mask, *[not answer_only] * int(strategy.separator)]]
    return Rows(packed.tokens[:1].int(), packed.doc_ids[:1].int(), packed.positions[:1].int(),
                torch.tensor(maskable[:config.seq_len])[None])


def task_row_statistics(tokenizer, config: TrainConfig, rows: int = 200,
                        seed: int = 0) -> dict[str, float]:
    """What the packed task rows of `config` hold, over `rows` answer-only rows drawn as the
    trainer draws them: the share of rows with two or more documents, and the mean number of
    documents, document boundaries, retrieval documents (runs of answer tokens) and natural
    documents per row."""
    counts = []
    for index in range(rows):
        row_seed = derived_seed(seed, "statistics", index)
        row = packed_task_row(tokenizer, config, np.random.default_rng(row_seed), row_seed, True)
        ids, answers = row.doc_ids[0], row.maskable[0].int()
        documents = int(torch.unique(ids).numel())
        retrieval = int((answers[1:] > answers[:-1]).sum() + answers[0])
        counts.append((documents, retrieval))
    documents = np.array([c[0] for c in counts], dtype=float)
    retrieval = np.array([c[1] for c in counts], dtype=float)
    return {"rows": rows, "share_with_2_or_more_documents": float((documents >= 2).mean()),
            "documents_per_row": float(documents.mean()),
            "boundaries_per_row": float((documents - 1).mean()),
            "retrieval_documents_per_row": float(retrieval.mean()),
            "natural_documents_per_row": float((documents - retrieval).mean())}


class BatchSource:
    """The global batch of each step, a pure function of (seed, step) and the corpus cursor.

    Corpus rows are read in a fresh seeded permutation per epoch; `cursor` counts the corpus rows
    consumed so far and is the data-loader position saved in checkpoints.
    """

    def __init__(self, rows: Rows, config: TrainConfig, tokenizer) -> None:
        if len(rows) == 0:
            raise ValueError(f"the corpus {config.corpus!r} gave no training rows")
        self.rows, self.config, self.tokenizer = rows, config, tokenizer
        self.cursor = 0
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _corpus_rows(self, count: int) -> Rows:
        picked = []
        for position in range(self.cursor, self.cursor + count):
            epoch, index = divmod(position, len(self.rows))
            if epoch != self._epoch:
                rng = np.random.default_rng(derived_seed(self.config.seed, "order", epoch))
                self._epoch, self._order = epoch, rng.permutation(len(self.rows))
                if epoch > 0:
                    log.info("corpus epoch %d starts (%d rows per epoch)", epoch, len(self.rows))
            picked.append(int(self._order[index]))
        self.cursor += count
        return self.rows.select(torch.tensor(picked, dtype=torch.long))

    def batch(self, step: int) -> tuple[Rows, int]:
        """The global rows of `step` and how many of them are task rows."""
        config = self.config
        rng = np.random.default_rng(derived_seed(config.seed, "batch", step))
        cut = rng.random() < config.random_length_fraction
        length = int(rng.integers(1, config.seq_len + 1)) if cut else config.seq_len
        # A cut step has no task rows: a cut retrieval row would lose its answer.
        is_task = rng.random(config.batch_size) < (0.0 if cut else task_fraction_at(config, step))
        corpus = self._corpus_rows(int((~is_task).sum()))
        if not is_task.any():
            return corpus.cut(length), 0
        parts, corpus_index = [], 0
        for row, task_flag in enumerate(is_task):
            if task_flag:
                seed = derived_seed(config.seed, "task", step, row)
                answer_only = bool(rng.random() < answer_only_fraction_at(config, step))
                if config.task_lengths is not None:
                    parts.append(packed_task_row(self.tokenizer, config, rng, seed, answer_only))
                    continue
                task = config.tasks[int(rng.integers(len(config.tasks)))]
                parts.append(task_row(self.tokenizer, config, task, length,
                                      float(rng.uniform(0.0, 100.0)), seed, answer_only))
            else:
                parts.append(corpus.select(slice(corpus_index, corpus_index + 1)))
                corpus_index += 1
        return Rows.concat(parts), int(is_task.sum())


def row_tokens(rows: Rows) -> torch.Tensor:
    """The loss normaliser of each row: its length L (LLaDA pre-training), or for an answer-only
    row its number of answer tokens (LLaDA SFT), so that a 5-token answer weighs like a row."""
    return torch.where(answer_only_rows(rows), rows.maskable.sum(dim=1), rows.tokens.shape[1])


def answer_only_rows(rows: Rows) -> torch.Tensor:
    """[B] bool: rows where some real token is not maskable (SFT-style task rows)."""
    return (~rows.maskable & (rows.doc_ids >= 0)).any(dim=1)


def noise(rows: Rows, config: TrainConfig, mask_token_id: int, generator_seed: int) -> NoisedBatch:
    """LLaDA's forward process on `rows` with a generator seeded by `generator_seed`; answer-only
    rows are masked as LLaDA's SFT estimator does (`diffusion.mask_exactly`)."""
    generator = torch.Generator().manual_seed(generator_seed)
    noised = forward_process(
        rows.tokens.long(), mask_token_id, eps=config.eps, generator=generator,
        doc_ids=rows.doc_ids.long(), t_per=config.t_per, stratified=config.stratified_t,
        maskable=rows.maskable,
    )
    sft = answer_only_rows(rows)
    if not sft.any():
        return noised
    masked, p_mask = mask_exactly(rows.maskable[sft], generator)
    all_masked, all_p = noised.masked.clone(), noised.p_mask.clone()
    all_masked[sft], all_p[sft] = masked, p_mask
    noisy = torch.where(all_masked, mask_token_id, rows.tokens.long())
    return NoisedBatch(noisy, all_masked, all_p)

