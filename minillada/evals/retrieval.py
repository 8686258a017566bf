"""Retrieval grids (passkey, NIAH, ...) and their scoring.

`run_retrieval_grid` runs every model over tasks x lengths x depths x repeats, scored from generated
text (`needle_score`, NeedleBench style; `token_match`) and, optionally, by likelihood against
distractor answers (`LikelihoodScoring`); rows are appended atomically to a JSON-lines file
(`ResultLog`) so an interrupted grid resumes where it stopped. Every retrieval number should be
read beside its `chance_level` (`claims.statistics.by_needle_distance` re-bins a grid by the
needle's distance from the question: LongLLaDA's "local perception").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from minillada.common.atomic import atomic_write_text
from minillada.common.names import KEY_TASKS
from minillada.common.seeds import derived_seed
from minillada.data.keys import KeySpace
from minillada.data.tasks import SampleMaker, TaskSample
from minillada.evals.generation import GenerationSettings
from minillada.evals.layout import LaidOutModel
from minillada.evals.models import Model, ModelAtLength, check_lengths, rope_columns
from minillada.modeling.diffusion import generate, mc_log_likelihood, model_device

# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def needle_score(prediction: str, answer: str, reference: str | None = None,
                 partial_weight: float = 0.2) -> float:
    """OpenCompass NeedleBench score in [0, 100].

    100 when `answer` occurs in `prediction`; otherwise `partial_weight * 100 * (1 - d / m)` where d
    is the edit distance between prediction and `reference` (default: the answer) with all
    whitespace removed and m the longer of the two lengths.
    """
    if not answer:
        raise ValueError("answer must be a non-empty string")
    if not 0.0 <= partial_weight <= 1.0:
        raise ValueError(f"partial_weight={partial_weight} must lie in [0, 1]")
    if answer in prediction:
        return 100.0
    squeeze = re.compile(r"\s+")
    pred = squeeze.sub("", prediction)
    ref = squeeze.sub("", answer if reference is None else reference)
    longest = max(len(pred), len(ref))
    similarity = 1.0 - levenshtein(pred, ref) / longest if longest else 1.0
    return partial_weight * 100.0 * similarity


def token_match(generated_ids: Sequence[int], answer_ids: Sequence[int]) -> tuple[bool, float]:
    """(exact match, token accuracy) of the first len(answer) generated tokens vs the answer."""
    if not answer_ids:
        raise ValueError("answer_ids must not be empty")
    head = list(generated_ids[: len(answer_ids)])
    hits = sum(g == a for g, a in zip(head, answer_ids, strict=False))
    return head == list(answer_ids), hits / len(answer_ids)


def chance_level(task: str, keys: KeySpace | int, *, metric: str = "exact",
                 n_distractors: int | None = None, hops: int = 4) -> float:
    """The score (in %) of a uniformly random guess, to read beside a retrieval number.

    `keys` is the task's `KeySpace` (an int: k-digit number keys). `exact` (exact match of the
    generated answer, the `exact` column): 100 / keys.size for the tasks whose answer is one key
    (`KEY_TASKS`; 100 x 10^-k for k-digit numbers, 100 / n for n word or token keys); for
    variable tracking, whose answer is
    hops + 1 names of 5 random capitals, 100 x 26^-(5 (hops + 1)). `likelihood` (the answer more
    likely than `n_distractors` random answers): 100 / (n_distractors + 1), for any task. The
    NeedleBench score (`value`) has no closed-form chance: a generation that happens to contain
    the key scores 100, and other outputs earn partial credit.
    """
    if not isinstance(keys, KeySpace):
        keys = KeySpace("number", keys)
    if metric == "likelihood":
        if not isinstance(n_distractors, int) or n_distractors < 1:
            raise ValueError(f"likelihood chance needs n_distractors >= 1, got {n_distractors!r}")
        return 100.0 / (n_distractors + 1)
    if metric != "exact":
        raise ValueError(f"unknown metric {metric!r}; choose exact or likelihood")
    if task in KEY_TASKS:
        return 100.0 / keys.size
    if task == "variable_tracking":
        return 100.0 * 26.0 ** -(5 * (hops + 1))
    raise ValueError(f"no chance level for task {task!r}; known: "
                     f"{', '.join((*KEY_TASKS, 'variable_tracking'))}")


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LikelihoodScoring:
    """Score a sample by Monte-Carlo likelihood: correct when its answer is more likely than each
    of its distractors, all estimated with the same masks (`mc` draws). Distractors are
    `n_distractors` random strings of the answer's length over `alphabet` (e.g. the digit
    tokens), or with `needles` the keys of the sample's other needles (multi-key NIAH: the
    queried key against the three others in the document, chance 1 / 4 by design)."""

    alphabet: tuple[int, ...] = ()
    n_distractors: int = 9
    mc: int = 32
    needles: bool = False

    def __post_init__(self) -> None:
        if self.mc < 1 or (not self.needles and (len(set(self.alphabet)) < 2
                                                 or self.n_distractors < 1)):
            raise ValueError("likelihood scoring needs mc >= 1 and, without needles, >= 2 "
                             "distinct alphabet tokens and n_distractors >= 1; got "
                             f"{self.mc}, {len(set(self.alphabet))}, {self.n_distractors}")

    def distractors(self, sample: TaskSample, generator: torch.Generator) -> list[list[int]]:
        """The answers `sample`'s answer is compared with."""
        answer = list(sample.answer_ids)
        if self.needles:
            others = [list(ids) for ids in sample.metadata.get("key_ids", [])
                      if list(ids) != answer]
            if not others:
                raise ValueError(f"likelihood over needles needs a sample with several needles' "
                                 f"keys (multi-key NIAH); {sample.task!r} has none")
            return others
        if len(set(self.alphabet)) ** len(answer) <= self.n_distractors:
            raise ValueError(f"an answer of {len(answer)} tokens over {len(set(self.alphabet))} "
                             f"symbols has fewer than {self.n_distractors} distractors")
        alphabet, seen, out = torch.tensor(sorted(set(self.alphabet))), {tuple(answer)}, []
        while len(out) < self.n_distractors:
            draw = alphabet[torch.randint(len(alphabet), (len(answer),), generator=generator)]
            if tuple(draw.tolist()) not in seen:
                seen.add(tuple(draw.tolist()))
                out.append(draw.tolist())
        return out


class ResultLog:
    """Rows of a tidy table kept in a JSON-lines file; `key` columns identify a finished cell.

    Each `extend` rewrites the whole file atomically, so a crash leaves either the old or the new
    table, and a restart skips the cells already present.
    """

    def __init__(self, path: str | Path, key: Sequence[str]):
        self.path, self.key = Path(path), tuple(key)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open() as handle:
                self.rows = [json.loads(line) for line in handle if line.strip()]
        missing = {k for row in self.rows for k in self.key if k not in row}
        if missing:
            raise ValueError(f"{self.path} lacks key columns {sorted(missing)}; "
                             f"it was written by another evaluation (expected key {self.key})")

    def cell(self, row: Mapping[str, Any]) -> tuple:
        return tuple(row[k] for k in self.key)

    def done(self) -> set[tuple]:
        return {self.cell(row) for row in self.rows}

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows.extend(dict(row) for row in rows)
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.rows))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


RETRIEVAL_KEY = ("model", "method", "task", "length", "depth", "repeat", "seed")


def _check_grid(tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
                repeats: int) -> None:
    if not tasks:
        raise ValueError("give at least one task")
    check_lengths(lengths, 0, "zero")
    outside = [d for d in depths if not 0 <= d <= 100]
    if not depths or outside:
        raise ValueError(f"depths are percentages in [0, 100]; got {list(depths)}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")


def cell_sample(make_sample: SampleMaker, cell: tuple, seed: int,
                paired_depths: bool = False) -> TaskSample:
    """The sample of grid cell (task, length, depth, repeat) under `seed`, the one every model
    of a `run_retrieval_grid` is scored on. With `paired_depths` the draw leaves the depth out,
    so every depth of one repeat is the same haystack and key with the needle moved."""
    task, length, depth, repeat = cell
    drawn = (task, length, repeat) if paired_depths else cell
    return make_sample(task, length, depth, derived_seed(seed, *drawn))


def run_retrieval_grid(models: Mapping[str, ModelAtLength], make_sample: SampleMaker,
                       decode: Callable[[Sequence[int]], str], *, tasks: Sequence[str],
                       lengths: Sequence[int], depths: Sequence[float], repeats: int,
                       settings: GenerationSettings, results_path: str | Path,
                       mask_token_id: int, seed: int = 0, batch_size: int = 8,
                       fit_gen_length: bool = False, tokens_per_step: int | None = None,
                       copier: Sequence[frozenset[int]] | None = None,
                       likelihood: LikelihoodScoring | None = None,
                       paired_depths: bool = False) -> pd.DataFrame:
    """Every model on tasks x lengths x depths x repeats; one row per (model, method, cell).

    `make_sample(task, length, depth, seed)` builds a cell's sample (the same for every model).
    Method `generate` runs the LLaDA sampler, batching prompts of equal length, and scores the
    decoded text (`needle_score` as `value`, `exact` and `token_acc` on tokens); method
    `likelihood` (when given) scores by `LikelihoodScoring`. Rows are appended to
    `results_path` (JSON lines) as batches finish; a rerun skips the cells already there.
    `fit_gen_length` shortens generation to the grid's longest answer, committing
    `tokens_per_step` tokens a step (`settings.fitted_to`; 1: one token a step). Generated rows
    hold `slots`, whether each answer token is right, and with `copier` (the key tokens each
    answer token may be: `KeySpace.slot_token_ids`) `copier_chance`, the exact-match chance of
    a model that copies a random key token of the prompt (`copier_chance`). `paired_depths`:
    every depth of a repeat shares its haystack and key (`cell_sample`).
    All samples are built and checked before any model runs.
    """
    _check_grid(tasks, lengths, depths, repeats)
    cells = [(t, n, d, r) for t in tasks for n in lengths for d in depths for r in range(repeats)]
    samples = {cell: cell_sample(make_sample, cell, seed, paired_depths) for cell in cells}
    if fit_gen_length:
        settings = settings.fitted_to(max(len(s.answer_ids) for s in samples.values()),
                                      tokens_per_step)
    for cell, sample in samples.items():
        _check_fits(sample, settings, cell)
    fixed = {"gen_length": settings.gen_length, "block_length": settings.block_length,
             "steps": settings.steps, "temperature": settings.temperature,
             "remasking": settings.remasking}
    log = ResultLog(results_path, RETRIEVAL_KEY)
    for row in log.rows:
        changed = {k: (row.get(k), v) for k, v in fixed.items() if row.get(k) != v}
        if changed:
            raise ValueError(f"{log.path} holds results made with other sampler settings "
                             f"(file vs now: {changed}); write to another file")
    methods = ("generate", "likelihood") if likelihood else ("generate",)
    done = log.done()
    todo = [(label, method, cell) for cell in cells for label in models for method in methods
            if (label, method, *cell, seed) not in done]
    progress = tqdm(total=len(todo), desc="retrieval")
    for length in lengths:
        for label, model_at in models.items():
            mine = [(method, cell) for (lab, method, cell) in todo
                    if lab == label and cell[1] == length]
            if not mine:
                continue
            model = model_at(length)
            generate_cells = [cell for method, cell in mine if method == "generate"]
            for batch in _equal_length_batches(generate_cells, samples, batch_size):
                rows = _generate_rows(model, label, batch, samples, decode, settings,
                                      mask_token_id, seed, copier)
                log.extend(dict(row, **fixed) for row in rows)
                progress.update(len(rows))
            for cell in (cell for method, cell in mine if method == "likelihood"):
                row = _likelihood_row(model, label, cell, samples[cell], likelihood,
                                      mask_token_id, seed, batch_size)
                log.extend([dict(row, **fixed)])
                progress.update()
    progress.close()
    return log.frame()


def _check_fits(sample: TaskSample, settings: GenerationSettings, cell: tuple) -> None:
    if len(sample.answer_ids) > settings.gen_length:
        raise ValueError(f"the answer of {cell[0]} has {len(sample.answer_ids)} tokens, more "
                         f"than gen_length={settings.gen_length}")


def document_lengths(sample: TaskSample) -> list[int]:
    """The prompt's documents (`doc_lengths` of a packed sample; else the whole prompt)."""
    return list(sample.metadata.get("doc_lengths") or [len(sample.prompt_ids)])


def _equal_length_batches(cells: list[tuple], samples: Mapping[tuple, TaskSample],
                          batch_size: int) -> list[list[tuple]]:
    by_length: dict[tuple[int, ...], list[tuple]] = {}
    for cell in cells:
        by_length.setdefault(tuple(document_lengths(samples[cell])), []).append(cell)
    return [group[i:i + batch_size] for group in by_length.values()
            for i in range(0, len(group), batch_size)]


def _cell_columns(cell: tuple, sample: TaskSample, seed: int) -> dict[str, Any]:
    task, length, depth, repeat = cell
    return {"task": task, "length": length, "depth": depth, "repeat": repeat, "seed": seed,
            "prompt_tokens": len(sample.prompt_ids), "answer": sample.answer_text,
            "needle_distance": needle_distance(sample)}


@torch.no_grad()
def _for_sample(model: Model, label: str, sample: TaskSample
                ) -> tuple[Model, dict[str, Any], torch.device]:
    """The model to call on `sample`'s prompt (a `LaidOutModel` laid out for its documents), the
    columns naming it and its device. Named and placed before the layout wraps it: the
    per-prompt function has neither a RoPE setting nor parameters to tell its device."""
    columns, device = rope_columns(model, label), model_device(model)
    if isinstance(model, LaidOutModel):
        model = model.documents(document_lengths(sample))
    return model, columns, device


def copier_chance(sample: TaskSample, slot_ids: Sequence[frozenset[int]]) -> float:
    """The exact-match chance (%) of a random copier: a model that fills each answer token with
    a key token of its kind (`slot_ids`, `KeySpace.slot_token_ids`) drawn uniformly from those
    in the prompt, so it finds keys but cannot tell which one is asked for. 100 % for one needle
    whose key tokens no other text holds; about 1 / (needles) with several needles or decoy
    documents; 0 where the prompt holds no candidate."""
    if len(slot_ids) != len(sample.answer_ids):
        raise ValueError(f"{len(slot_ids)} key slots for an answer of "
                         f"{len(sample.answer_ids)} tokens")
    chance = 100.0
    for answer, allowed in zip(sample.answer_ids, slot_ids, strict=True):
        candidates = [token for token in sample.prompt_ids if token in allowed]
        chance *= candidates.count(answer) / len(candidates) if candidates else 0.0
    return chance


def _generate_rows(model: Model, label: str, cells: list[tuple],
                   samples: Mapping[tuple, TaskSample], decode: Callable[[Sequence[int]], str],
                   settings: GenerationSettings, mask_token_id: int, seed: int,
                   copier: Sequence[frozenset[int]] | None = None) -> list[dict[str, Any]]:
    prompts = torch.tensor([list(samples[cell].prompt_ids) for cell in cells], dtype=torch.long)
    model, columns, device = _for_sample(model, label, samples[cells[0]])
    generator = torch.Generator().manual_seed(derived_seed(seed, "generate", *cells[0]))
    output = generate(model, prompts.to(device), gen_length=settings.gen_length,
                      block_length=settings.block_length, steps=settings.steps,
                      temperature=settings.temperature, remasking=settings.remasking,
                      mask_token_id=mask_token_id, generator=generator)
    rows = []
    for cell, generated in zip(cells, output[:, prompts.shape[1]:].tolist(), strict=True):
        sample = samples[cell]
        text = decode(generated)
        exact, accuracy = token_match(generated, sample.answer_ids)
        decoys = sample.metadata.get("distractor_ids")
        slots = [int(g == a) for g, a in zip(generated, sample.answer_ids, strict=False)]
        rows.append(dict(columns, method="generate",
                         **_cell_columns(cell, sample, seed),
                         value=needle_score(text, sample.answer_text), exact=float(exact),
                         token_acc=accuracy, slots=json.dumps(slots), prediction=text, mc=None,
                         copier_chance=None if copier is None else copier_chance(sample, copier),
                         distractor_hit=None if decoys is None else
                         float(any(token_match(generated, ids)[0] for ids in decoys))))
    return rows


@torch.no_grad()
def _likelihood_row(model: Model, label: str, cell: tuple, sample: TaskSample,
                    scoring: LikelihoodScoring, mask_token_id: int, seed: int,
                    batch_size: int) -> dict[str, Any]:
    answer = list(sample.answer_ids)
    candidates = [answer, *scoring.distractors(
        sample, torch.Generator().manual_seed(derived_seed(seed, "distractors", *cell)))]
    model, columns, device = _for_sample(model, label, sample)
    prompt = torch.tensor(list(sample.prompt_ids), dtype=torch.long, device=device)
    # Common random numbers: every candidate is scored under the same masks (drawn before any
    # batch, so `batch_size` changes only how many rows share a forward pass).
    log_likelihoods = [float(mc_log_likelihood(
        model, prompt, torch.tensor(candidate, device=device), mc=scoring.mc,
        batch_size=batch_size, mask_token_id=mask_token_id,
        generator=torch.Generator().manual_seed(derived_seed(seed, "likelihood", *cell))))
        for candidate in candidates]
    margin = log_likelihoods[0] - max(log_likelihoods[1:])
    return dict(columns, method="likelihood",
                **_cell_columns(cell, sample, seed), value=100.0 * (margin > 0),
                exact=float(margin > 0), margin=margin, mc=scoring.mc,
                candidates=len(candidates))


def needle_distance(sample: TaskSample) -> int | None:
    """Tokens between the end of the needle and the end of the prompt (where the answer starts),
    or None for a sample without a single needle."""
    end = sample.metadata.get("needle_end")
    return None if end is None else len(sample.prompt_ids) - end
