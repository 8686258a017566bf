"""Long-context evaluations of a masked-diffusion LM, each returning a tidy `pandas.DataFrame`.

- Perplexity: LongLLaDA's chunked protocol (`ppl_at_lengths`, `ppl_curve`) beside LLaDA's unbiased
  Monte-Carlo likelihood, and the paired masked-diffusion loss grid (`paired_loss_grid`), the
  cheap and robust primary metric: every variant sees the same windows under the same masks.
- Retrieval (passkey, NIAH, ...): `run_retrieval_grid` over tasks x lengths x depths x repeats,
  scored from generated text (`needle_score`, NeedleBench style) and, optionally, by likelihood
  against distractor answers; results are appended atomically to a JSON-lines file so an
  interrupted grid resumes where it stopped. `by_needle_distance` re-bins retrieval by the needle's
  distance from the question (LongLLaDA's "local perception").

Models are compared as `ModelAtLength`s: a label maps to a callable that, given the evaluation
length, returns a ready model (e.g. the same weights with a RoPE variant set for that length; see
`rope_variants`). A model is any callable `model(input_ids, positions=None, doc_ids=None).logits`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minillada.data import TaskSample
from minillada.diffusion import diffusion_loss, forward_process, generate, mc_log_likelihood
from minillada.rope import validate_rope_args

Model = Callable[..., Any]
ModelAtLength = Callable[[int], Model]

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


# ----------------------------------------------------------------------------------------------
# Results that survive interruption
# ----------------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and `os.replace` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def cell_seed(seed: int, *parts: Any) -> int:
    """A stable 31-bit seed for one grid cell (independent of Python's hash randomization)."""
    return zlib.crc32(":".join(map(str, (seed, *parts))).encode()) & 0x7FFFFFFF


# ----------------------------------------------------------------------------------------------
# Models under comparison
# ----------------------------------------------------------------------------------------------


def fixed_model(model: Model) -> ModelAtLength:
    """The same model at every evaluation length."""
    return lambda length: model


# Direct extrapolation has no target; dynamic NTK takes the running length at each forward.
_UNTARGETED = ("default", "dynamic")


def rope_variants(model: torch.nn.Module, variants: Sequence[str], target_len: int | None = None,
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> dict[str, ModelAtLength]:
    """Label -> `model` with a RoPE variant set in place for the evaluation length.

    Extending variants are set for `target_len`, or, when it is None, for the evaluation length
    itself (never below T_train), as LongLLaDA scales per length; `default` (direct extrapolation)
    and `dynamic` take no target. `params` maps a variant to its parameters.
    """
    params = dict(params or {})
    unknown = set(params) - set(variants)
    if unknown:
        raise ValueError(f"params given for {sorted(unknown)}, not among {list(variants)}")
    config = model.config
    train_len = config.max_sequence_length
    for variant in variants:  # fail on a bad variant, target or parameter before any work
        target = None if variant in _UNTARGETED else (target_len or train_len)
        validate_rope_args(variant, config.d_model // config.n_heads, config.rope_theta,
                           train_len, target, dict(params.get(variant, {})))

    def at_length(variant: str) -> ModelAtLength:
        def configured(length: int) -> Model:
            target = None
            if variant not in _UNTARGETED:
                target = target_len if target_len is not None else max(length, train_len)
            model.set_rope(variant, target_len=target, params=dict(params.get(variant, {})))
            return model
        return configured

    return {variant: at_length(variant) for variant in variants}


def _rope_columns(model: Model, label: str) -> dict[str, Any]:
    """Columns naming the model under test: its label and, when it has one, its RoPE setting."""
    config = getattr(model, "config", None)
    return {"model": label, "rope": getattr(config, "rope_variant", label),
            "rope_target_len": getattr(config, "rope_target_len", None)}


def _device(model: Model) -> torch.device:
    return getattr(model, "device", torch.device("cpu"))


# ----------------------------------------------------------------------------------------------
# Perplexity and the paired loss grid
# ----------------------------------------------------------------------------------------------


def eval_windows(documents: Sequence[Sequence[int]], length: int, max_windows: int,
                 eod_token_id: int) -> tuple[torch.Tensor, str]:
    """Up to `max_windows` token windows of exactly `length` tokens, and where they came from.

    The first `length` tokens of each document that long, in order ("documents"); when no
    document is that long, consecutive windows of all documents joined by `eod_token_id`
    ("concatenated", with a warning, since windows then cross document boundaries).
    """
    if length < 2 or max_windows < 1:
        raise ValueError(f"need length >= 2 and max_windows >= 1, got {length} and {max_windows}")
    windows = [list(doc[:length]) for doc in documents if len(doc) >= length][:max_windows]
    source = "documents"
    if not windows:
        stream = [tok for doc in documents for tok in (*doc, eod_token_id)]
        windows = [stream[i:i + length] for i in range(0, len(stream) - length + 1, length)]
        windows = windows[:max_windows]
        if not windows:
            raise ValueError(f"the {len(documents)} documents hold {len(stream)} tokens with "
                             f"separators, fewer than one window of length {length}")
        source = "concatenated"
        warnings.warn(f"no document has {length} tokens: using {len(windows)} window(s) of the "
                      "documents concatenated with eod", stacklevel=2)
    return torch.tensor(windows, dtype=torch.long), source


@torch.no_grad()
def masked_chunk_losses(model: Model, window: torch.Tensor, *, chunk: int, mc: int,
                        mask_token_id: int, generator: torch.Generator,
                        batch_size: int = 8) -> torch.Tensor:
    """LongLLaDA's chunk loss, one value per Monte-Carlo draw (shape [mc]).

    Draw k ~ U{1..chunk}, mask k random tokens of the window's last `chunk` tokens (the text
    before them is never masked) and take the plain mean cross-entropy over the masked tokens.
    In expectation this equals LLaDA's unbiased per-token bound (L/l weighting, divided by L).
    """
    if not 1 <= chunk < window.numel():
        raise ValueError(f"chunk={chunk} must lie in [1, window length {window.numel()})")
    counts = torch.randint(1, chunk + 1, (mc,), generator=generator)
    # A uniformly random permutation's positions below k form a uniform k-subset.
    masked = torch.rand(mc, chunk, generator=generator).argsort(dim=1) < counts[:, None]
    device, target = _device(model), window[-chunk:]
    losses = []
    for rows in torch.arange(mc).split(batch_size):
        noisy = window.repeat(len(rows), 1)
        noisy[:, -chunk:][masked[rows]] = mask_token_id
        logits = model(noisy.to(device)).logits[:, -chunk:].float().cpu()
        ce = F.cross_entropy(logits.transpose(1, 2), target.expand(len(rows), -1),
                             reduction="none")
        losses.append((ce * masked[rows]).sum(dim=1) / counts[rows])
    return torch.cat(losses)


def _check_lengths(lengths: Sequence[int], minimum: int, what: str) -> list[int]:
    bad = [n for n in lengths if not isinstance(n, int) or n <= minimum]
    if not lengths or bad:
        raise ValueError(f"lengths must be integers above {what} ({minimum}); got {list(lengths)}")
    return list(lengths)


def ppl_at_lengths(models: Mapping[str, ModelAtLength], documents: Sequence[Sequence[int]],
                   lengths: Sequence[int], *, mask_token_id: int, eod_token_id: int,
                   chunk: int = 64, mc: int = 8, seed: int = 0, max_windows: int = 8,
                   batch_size: int = 8, elbo: bool = True) -> pd.DataFrame:
    """PPL at length L: the last `chunk` tokens of each L-token window scored given the L - chunk
    tokens before them, for every model, on the same windows with the same masks.

    One row per (model, length, window, method): `chunk_ppl` is LongLLaDA's protocol
    (`masked_chunk_losses`; value = exp(mean loss over draws)); `elbo` is LLaDA's unbiased
    Monte-Carlo bound from `diffusion.mc_log_likelihood` (value = exp(-log-likelihood / chunk)).
    Average documents as exp(mean loss), i.e. the geometric mean of their PPLs.
    """
    lengths = _check_lengths(lengths, chunk, "the chunk size")
    if mc < 1:
        raise ValueError(f"mc must be >= 1, got {mc}")
    windows = {n: eval_windows(documents, n, max_windows, eod_token_id) for n in lengths}
    progress = tqdm(total=len(models) * sum(len(w) for w, _ in windows.values()), desc="ppl")
    rows = []
    for length, (batch, source) in windows.items():
        for label, model_at in models.items():
            model = model_at(length)
            for index, window in enumerate(batch):
                common = dict(_rope_columns(model, label), length=length, window=index,
                              source=source, chunk=chunk, mc=mc, seed=seed)
                cell = cell_seed(seed, "ppl", length, index)
                losses = masked_chunk_losses(
                    model, window, chunk=chunk, mc=mc, mask_token_id=mask_token_id,
                    generator=torch.Generator().manual_seed(cell), batch_size=batch_size)
                loss = losses.mean().item()
                rows.append(dict(common, method="chunk_ppl", loss=loss, value=math.exp(loss)))
                if elbo:
                    log_likelihood = mc_log_likelihood(
                        model, window[:-chunk], window[-chunk:], mc=mc,
                        mask_token_id=mask_token_id, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(cell))
                    loss = -float(log_likelihood) / chunk
                    rows.append(dict(common, method="elbo", loss=loss, value=math.exp(loss)))
                progress.update()
    progress.close()
    return pd.DataFrame(rows)


def ppl_curve(models: Mapping[str, ModelAtLength], ids: Sequence[int], *, mask_token_id: int,
              chunk: int = 64, mc: int = 8, seed: int = 0, batch_size: int = 8) -> pd.DataFrame:
    """LongLLaDA's PPL curve of one long document: chunk i (i >= 1) is scored given all text
    before it; `chunk_ppl` = exp(mean chunk loss) and `value` = the running geometric mean of the
    chunk PPLs up to that point. Each model is set up for the document's full length."""
    n_chunks = len(ids) // chunk
    if n_chunks < 2:
        raise ValueError(f"a document of {len(ids)} tokens holds fewer than two chunks of {chunk}")
    document = torch.tensor(ids[: n_chunks * chunk], dtype=torch.long)
    progress = tqdm(total=len(models) * (n_chunks - 1), desc="ppl curve")
    rows = []
    for label, model_at in models.items():
        model, total = model_at(len(document)), 0.0
        for i in range(1, n_chunks):
            losses = masked_chunk_losses(
                model, document[: (i + 1) * chunk], chunk=chunk, mc=mc,
                mask_token_id=mask_token_id, batch_size=batch_size,
                generator=torch.Generator().manual_seed(cell_seed(seed, "curve", i)))
            loss = losses.mean().item()
            total += loss
            rows.append(dict(_rope_columns(model, label), method="chunk_ppl",
                             length=(i + 1) * chunk, context=i * chunk, loss=loss,
                             chunk_ppl=math.exp(loss), value=math.exp(total / i), chunk=chunk,
                             mc=mc, seed=seed))
            progress.update()
    progress.close()
    return pd.DataFrame(rows)


@torch.no_grad()
def paired_loss_grid(models: Mapping[str, ModelAtLength], documents: Sequence[Sequence[int]],
                     lengths: Sequence[int], *, mask_token_id: int, eod_token_id: int,
                     mc: int = 4, seed: int = 0, max_windows: int = 8,
                     batch_size: int = 8) -> pd.DataFrame:
    """The masked-diffusion loss (`diffusion.diffusion_loss`) of every model on the same held-out
    windows under the same masks, at every length; one row per (model, length, window).

    Each window is noised `mc` times with stratified t = (j + u) / mc, j = 0..mc-1, once per
    length; every model then sees exactly those noised batches, so differences between models are
    not sampling noise (see `paired_summary`).
    """
    lengths = _check_lengths(lengths, 1, "one token")
    if mc < 1:
        raise ValueError(f"mc must be >= 1, got {mc}")
    windows = {n: eval_windows(documents, n, max_windows, eod_token_id) for n in lengths}
    progress = tqdm(total=len(models) * len(lengths), desc="loss grid")
    rows = []
    for length, (batch, source) in windows.items():
        generator = torch.Generator().manual_seed(cell_seed(seed, "loss", length))
        targets = batch.repeat_interleave(mc, dim=0)
        t = ((torch.arange(mc) + torch.rand(len(batch), 1, generator=generator)) / mc).flatten()
        noised = forward_process(targets, mask_token_id, t=t, generator=generator)
        for label, model_at in models.items():
            model = model_at(length)
            losses = []
            for part in torch.arange(len(targets)).split(batch_size):
                logits = model(noised.noisy_ids[part].to(_device(model))).logits.float().cpu()
                losses += [diffusion_loss(logits[i:i + 1], targets[row:row + 1],
                                          noised.masked[row:row + 1], noised.p_mask[row:row + 1]
                                          ).item() for i, row in enumerate(part.tolist())]
            per_window = torch.tensor(losses).view(len(batch), mc).mean(dim=1)
            rows += [dict(_rope_columns(model, label), method="diffusion_loss", length=length,
                          window=index, source=source, value=value, mc=mc, seed=seed)
                     for index, value in enumerate(per_window.tolist())]
            progress.update()
    progress.close()
    return pd.DataFrame(rows)


def paired_summary(frame: pd.DataFrame, reference: str | None = None,
                   column: str = "value") -> pd.DataFrame:
    """Mean of `column` per (method, model, length) with its standard error, and the paired
    difference to the `reference` model on the same windows with its standard error
    sd(d_w) / sqrt(n) (NaN where n < 2)."""
    models = list(dict.fromkeys(frame["model"]))
    reference = models[0] if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models {models}")
    keys = ["method", "length", "window"]
    base = frame[frame["model"] == reference].set_index(keys)[column].rename("reference")
    paired = frame.join(base, on=keys)
    paired["delta"] = paired[column] - paired["reference"]
    groups = paired.groupby(["method", "model", "rope", "length"], sort=False, dropna=False)
    summary = groups.agg(value=(column, "mean"), se=(column, "sem"), delta=("delta", "mean"),
                         delta_se=("delta", "sem"), n=(column, "size"), mc=("mc", "first"),
                         seed=("seed", "first")).reset_index()
    summary["reference"] = reference
    return summary


# ----------------------------------------------------------------------------------------------
# Retrieval grids (passkey, NIAH, ...)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """LLaDA sampler settings for a retrieval answer; defaults are UltraLLaDA's NIAH settings
    (generate 32 tokens, one block of 32, 16 steps, temperature 0, low-confidence remasking)."""

    gen_length: int = 32
    block_length: int = 32
    steps: int = 16
    temperature: float = 0.0
    remasking: str = "low_confidence"

    def __post_init__(self) -> None:
        for name in ("gen_length", "block_length", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} is not a multiple of "
                             f"block_length={self.block_length}")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps={self.steps} is not divisible by the number of blocks "
                             f"{blocks} (gen_length / block_length)")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking={self.remasking!r}; choose low_confidence or random")

    def fitted_to(self, answer_length: int) -> GenerationSettings:
        """One block just long enough for the answer, rounded up to whole steps, committing the
        same number of tokens per step (gen_length / steps): the cheap mini-scale setting."""
        rate, remainder = divmod(self.gen_length, self.steps)
        if remainder:
            raise ValueError(f"gen_length={self.gen_length} / steps={self.steps} is not a whole "
                             "number of tokens per step; cannot keep the rate when shortening")
        length = math.ceil(answer_length / rate) * rate
        return GenerationSettings(length, length, length // rate, self.temperature,
                                  self.remasking)


@dataclass(frozen=True)
class LikelihoodScoring:
    """Score a sample by Monte-Carlo likelihood: correct when its answer is more likely than each
    of `n_distractors` random strings of the same length over `alphabet` (e.g. the digit tokens),
    all estimated with the same masks (`mc` draws)."""

    alphabet: tuple[int, ...]
    n_distractors: int = 9
    mc: int = 32

    def __post_init__(self) -> None:
        if len(set(self.alphabet)) < 2 or self.n_distractors < 1 or self.mc < 1:
            raise ValueError("likelihood scoring needs >= 2 distinct alphabet tokens, "
                             f"n_distractors >= 1 and mc >= 1; got {len(set(self.alphabet))}, "
                             f"{self.n_distractors}, {self.mc}")

    def distractors(self, answer: Sequence[int], generator: torch.Generator) -> list[list[int]]:
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


SampleMaker = Callable[[str, int, float, int], TaskSample]
RETRIEVAL_KEY = ("model", "method", "task", "length", "depth", "repeat", "seed")


def _check_grid(tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
                repeats: int) -> None:
    if not tasks:
        raise ValueError("give at least one task")
    _check_lengths(lengths, 0, "zero")
    outside = [d for d in depths if not 0 <= d <= 100]
    if not depths or outside:
        raise ValueError(f"depths are percentages in [0, 100]; got {list(depths)}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")


def run_retrieval_grid(models: Mapping[str, ModelAtLength], make_sample: SampleMaker,
                       decode: Callable[[Sequence[int]], str], *, tasks: Sequence[str],
                       lengths: Sequence[int], depths: Sequence[float], repeats: int,
                       settings: GenerationSettings, results_path: str | Path,
                       mask_token_id: int, seed: int = 0, batch_size: int = 8,
                       fit_gen_length: bool = False,
                       likelihood: LikelihoodScoring | None = None) -> pd.DataFrame:
    """Every model on tasks x lengths x depths x repeats; one row per (model, method, cell).

    `make_sample(task, length, depth, seed)` builds a cell's sample (the same for every model).
    Method `generate` runs the LLaDA sampler, batching prompts of equal length, and scores the
    decoded text (`needle_score` as `value`, `exact` and `token_acc` on tokens); method
    `likelihood` (when given) scores by `LikelihoodScoring`. Rows are appended to
    `results_path` (JSON lines) as batches finish; a rerun skips the cells already there.
    `fit_gen_length` shortens generation to the grid's longest answer (`settings.fitted_to`).
    All samples are built and checked before any model runs.
    """
    _check_grid(tasks, lengths, depths, repeats)
    cells = [(t, n, d, r) for t in tasks for n in lengths for d in depths for r in range(repeats)]
    samples = {cell: make_sample(*cell[:3], cell_seed(seed, *cell)) for cell in cells}
    if fit_gen_length:
        settings = settings.fitted_to(max(len(s.answer_ids) for s in samples.values()))
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
                                      mask_token_id, seed)
                log.extend(dict(row, **fixed) for row in rows)
                progress.update(len(rows))
            for cell in (cell for method, cell in mine if method == "likelihood"):
                row = _likelihood_row(model, label, cell, samples[cell], likelihood,
                                      mask_token_id, seed)
                log.extend([dict(row, **fixed)])
                progress.update()
    progress.close()
    return log.frame()


def _check_fits(sample: TaskSample, settings: GenerationSettings, cell: tuple) -> None:
    if len(sample.answer_ids) > settings.gen_length:
        raise ValueError(f"the answer of {cell[0]} has {len(sample.answer_ids)} tokens, more "
                         f"than gen_length={settings.gen_length}")


def _equal_length_batches(cells: list[tuple], samples: Mapping[tuple, TaskSample],
                          batch_size: int) -> list[list[tuple]]:
    by_length: dict[int, list[tuple]] = {}
    for cell in cells:
        by_length.setdefault(len(samples[cell].prompt_ids), []).append(cell)
    return [group[i:i + batch_size] for group in by_length.values()
            for i in range(0, len(group), batch_size)]


def _cell_columns(cell: tuple, sample: TaskSample, seed: int) -> dict[str, Any]:
    task, length, depth, repeat = cell
    return {"task": task, "length": length, "depth": depth, "repeat": repeat, "seed": seed,
            "prompt_tokens": len(sample.prompt_ids), "answer": sample.answer_text,
            "needle_distance": needle_distance(sample)}


@torch.no_grad()
def _generate_rows(model: Model, label: str, cells: list[tuple],
                   samples: Mapping[tuple, TaskSample], decode: Callable[[Sequence[int]], str],
                   settings: GenerationSettings, mask_token_id: int,
                   seed: int) -> list[dict[str, Any]]:
    prompts = torch.tensor([list(samples[cell].prompt_ids) for cell in cells], dtype=torch.long)
    generator = torch.Generator().manual_seed(cell_seed(seed, "generate", *cells[0]))
    output = generate(model, prompts.to(_device(model)), gen_length=settings.gen_length,
                      block_length=settings.block_length, steps=settings.steps,
                      temperature=settings.temperature, remasking=settings.remasking,
                      mask_token_id=mask_token_id, generator=generator)
    rows = []
    for cell, generated in zip(cells, output[:, prompts.shape[1]:].tolist(), strict=True):
        sample = samples[cell]
        text = decode(generated)
        exact, accuracy = token_match(generated, sample.answer_ids)
        rows.append(dict(_rope_columns(model, label), method="generate",
                         **_cell_columns(cell, sample, seed),
                         value=needle_score(text, sample.answer_text), exact=float(exact),
                         token_acc=accuracy, prediction=text, mc=None))
    return rows


@torch.no_grad()
def _likelihood_row(model: Model, label: str, cell: tuple, sample: TaskSample,
                    scoring: LikelihoodScoring, mask_token_id: int, seed: int) -> dict[str, Any]:
    answer = list(sample.answer_ids)
    candidates = [answer, *scoring.distractors(
        answer, torch.Generator().manual_seed(cell_seed(seed, "distractors", *cell)))]
    prompt = torch.tensor(list(sample.prompt_ids), dtype=torch.long)
    # Common random numbers: every candidate is scored under the same masks.
    log_likelihoods = [float(mc_log_likelihood(
        model, prompt, torch.tensor(candidate), mc=scoring.mc, mask_token_id=mask_token_id,
        generator=torch.Generator().manual_seed(cell_seed(seed, "likelihood", *cell))))
        for candidate in candidates]
    margin = log_likelihoods[0] - max(log_likelihoods[1:])
    return dict(_rope_columns(model, label), method="likelihood",
                **_cell_columns(cell, sample, seed), value=100.0 * (margin > 0),
                exact=float(margin > 0), margin=margin, mc=scoring.mc)


def needle_distance(sample: TaskSample) -> int | None:
    """Tokens between the end of the needle and the end of the prompt (where the answer starts),
    or None for a sample without a single needle."""
    end = sample.metadata.get("needle_end")
    return None if end is None else len(sample.prompt_ids) - end


def by_needle_distance(frame: pd.DataFrame, bin_width: int) -> pd.DataFrame:
    """Retrieval re-binned by the needle's distance from the question instead of its depth.

    LongLLaDA's "local perception": under direct extrapolation a diffusion LM still retrieves a
    needle, but only within about T_train tokens of the question, whatever the total length.
    `distance` is the start of each bin of `bin_width` tokens; value and exact are means.
    """
    if not isinstance(bin_width, int) or bin_width < 1:
        raise ValueError(f"bin_width must be a positive integer, got {bin_width!r}")
    known = frame.dropna(subset=["needle_distance"])
    if known.empty:
        raise ValueError("no row has a needle_distance (single-needle tasks only)")
    binned = known.assign(distance=(known["needle_distance"] // bin_width * bin_width).astype(int))
    groups = binned.groupby(["model", "rope", "method", "task", "distance"], dropna=False)
    return groups.agg(value=("value", "mean"), exact=("exact", "mean"),
                      n=("value", "size")).reset_index()


# ----------------------------------------------------------------------------------------------
# Cross-document attention (leakage)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def cross_document_attention(model: torch.nn.Module, tokens: torch.Tensor,
                             positions: torch.Tensor, doc_ids: torch.Tensor) -> pd.DataFrame:
    """Share of attention mass that crosses document boundaries, per layer and row.

    The model runs on packed rows [B, L] with full attention (no document mask), as `direct` and
    `eod` training sees them; at each block the attention probabilities are recomputed from the
    block's input, and for every query the mass on keys of another document is summed, then
    averaged over heads and over the queries of the row. 0 means every query stays in its own
    document; a uniform spread over two equal documents gives 0.5. Padding (doc id -1) is skipped.
    """
    if tokens.shape != doc_ids.shape or tokens.shape != positions.shape or tokens.dim() != 2:
        raise ValueError(f"tokens {tuple(tokens.shape)}, positions {tuple(positions.shape)} and "
                         f"doc_ids {tuple(doc_ids.shape)} must all be the same [B, L]")
    device = _device(model)
    blocks = model.model.transformer.blocks
    shares: list[torch.Tensor] = []

    def measure(block, args):
        x, cos, sin, _ = args
        probs = block.attention_probs(x, cos, sin)  # [B, H, L, L]
        ids = doc_ids.to(device)
        other = (ids[:, :, None] != ids[:, None, :]).float()  # [B, Lq, Lk]
        crossing = (probs * other[:, None]).sum(-1).mean(1)  # [B, Lq]
        real = (ids >= 0).float()
        shares.append((crossing * real).sum(-1) / real.sum(-1))

    hooks = [block.register_forward_pre_hook(measure) for block in blocks]
    try:
        model(tokens.to(device), positions=positions.to(device), doc_ids=None)
    finally:
        for hook in hooks:
            hook.remove()
    return pd.DataFrame([dict(layer=layer, row=row, value=float(value))
                         for layer, per_row in enumerate(shares)
                         for row, value in enumerate(per_row.tolist())])
