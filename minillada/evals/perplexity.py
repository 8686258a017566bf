"""Perplexity and the paired loss grid.

- `ppl_at_lengths`: LongLLaDA's chunked protocol at each length (the last `chunk` tokens of a
  window scored given the text before them) beside LLaDA's unbiased Monte-Carlo bound (`elbo`).
  Both estimate the same expectation; they differ by Monte-Carlo noise and in the estimator's
  variance, not by a fixed ordering.
- `ppl_curve`: LongLLaDA's PPL curve of one long document.
- `paired_loss_grid` and `paired_summary`: the masked-diffusion loss of every model on the same
  held-out windows under the same masks, the cheap and robust primary metric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minillada.common.seeds import derived_seed
from minillada.evals.models import Model, ModelAtLength, check_lengths, rope_columns
from minillada.modeling.diffusion import (
    forward_process,
    masked_diffusion_loss,
    mc_log_likelihood,
    model_device,
    scored_logits,
)


def eval_windows(documents: Sequence[Sequence[int]], length: int, max_windows: int,
                 eod_token_id: int, consecutive: bool = False) -> tuple[torch.Tensor, str]:
    """Up to `max_windows` token windows of exactly `length` tokens, and where they came from.

    The first `length` tokens of each document that long, in order ("documents"); with
    `consecutive`, every non-overlapping `length`-token chunk of each document, taken round-robin
    (the first chunk of every document, then the second, ...) so that capped windows spread
    over documents (`document_of_windows` gives each window's document). When no document is
    that long, consecutive windows of all documents joined by `eod_token_id` ("concatenated",
    with a warning, since windows then cross document boundaries).
    """
    if length < 2 or max_windows < 1:
        raise ValueError(f"need length >= 2 and max_windows >= 1, got {length} and {max_windows}")
    picked = _document_windows(documents, length, max_windows, consecutive)
    windows = [list(documents[doc][start:start + length]) for doc, start in picked]
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


def _document_windows(documents: Sequence[Sequence[int]], length: int, max_windows: int,
                      consecutive: bool) -> list[tuple[int, int]]:
    """(document, start) of the windows `eval_windows` takes from documents."""
    chunks = [range(0, len(doc) // length * length if consecutive else min(len(doc), length)
                    // length * length, length) for doc in documents]
    rounds = max((len(c) for c in chunks), default=0)
    picked = [(doc, chunk[i]) for i in range(rounds) for doc, chunk in enumerate(chunks)
              if i < len(chunk)]
    return picked[:max_windows]


def document_of_windows(documents: Sequence[Sequence[int]], length: int, max_windows: int,
                        consecutive: bool = False) -> list[int]:
    """The document index of each window `eval_windows` takes (the same arguments)."""
    return [doc for doc, _ in _document_windows(documents, length, max_windows, consecutive)]


@torch.no_grad()
def masked_chunk_losses(model: Model, window: torch.Tensor, *, chunk: int, mc: int,
                        mask_token_id: int, generator: torch.Generator,
                        batch_size: int = 8) -> torch.Tensor:
    """LongLLaDA's chunk loss, one value per Monte-Carlo draw (shape [mc]).

    Draw k ~ U{1..chunk}, mask k random tokens of the window's last `chunk` tokens (the text
    before them is never masked) and take the plain mean cross-entropy over the masked tokens
    (their logits only are computed: `diffusion.scored_logits`).
    In expectation this equals LLaDA's unbiased per-token bound (L/l weighting, divided by L).
    """
    if not 1 <= chunk < window.numel():
        raise ValueError(f"chunk={chunk} must lie in [1, window length {window.numel()})")
    counts = torch.randint(1, chunk + 1, (mc,), generator=generator)
    # A uniformly random permutation's positions below k form a uniform k-subset.
    masked = torch.rand(mc, chunk, generator=generator).argsort(dim=1) < counts[:, None]
    device, target = model_device(model), window[-chunk:]
    losses = []
    for rows in torch.arange(mc).split(batch_size):
        mask, noisy = masked[rows], window.repeat(len(rows), 1)
        noisy[:, -chunk:][mask] = mask_token_id
        scored = torch.zeros(noisy.shape, dtype=torch.bool)
        scored[:, -chunk:] = mask
        logits = scored_logits(model, noisy.to(device), scored.to(device)).cpu().float()
        ce = torch.zeros(mask.shape)
        ce[mask] = F.cross_entropy(logits, target.expand(len(rows), -1)[mask], reduction="none")
        losses.append(ce.sum(dim=1) / counts[rows])
    return torch.cat(losses)



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
    lengths = check_lengths(lengths, chunk, "the chunk size")
    if mc < 1:
        raise ValueError(f"mc must be >= 1, got {mc}")
    windows = {n: eval_windows(documents, n, max_windows, eod_token_id) for n in lengths}
    progress = tqdm(total=len(models) * sum(len(w) for w, _ in windows.values()), desc="ppl")
    rows = []
    for length, (batch, source) in windows.items():
        for label, model_at in models.items():
            model = model_at(length)
            for index, window in enumerate(batch):
                common = dict(rope_columns(model, label), length=length, window=index,
                              source=source, chunk=chunk, mc=mc, seed=seed)
                cell = derived_seed(seed, "ppl", length, index)
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
                generator=torch.Generator().manual_seed(derived_seed(seed, "curve", i)))
            loss = losses.mean().item()
            total += loss
            rows.append(dict(rope_columns(model, label), method="chunk_ppl",
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
                     batch_size: int = 8, consecutive: bool = False) -> pd.DataFrame:
    """The masked-diffusion loss (`diffusion.diffusion_loss`) of every model on the same held-out
    windows under the same masks, at every length; one row per (model, length, window), with the
    window's `document` (windows of one document are not independent: bootstrap by document).

    Each window is noised `mc` times with stratified t = (j + u) / mc, j = 0..mc-1, once per
    length; every model then sees exactly those noised batches, so differences between models are
    not sampling noise (see `paired_summary`). Logits are computed at the masked positions only
    (`diffusion.scored_logits`). `consecutive`: `eval_windows`' several windows per document.
    """
    lengths = check_lengths(lengths, 1, "one token")
    if mc < 1:
        raise ValueError(f"mc must be >= 1, got {mc}")
    windows = {n: eval_windows(documents, n, max_windows, eod_token_id, consecutive)
               for n in lengths}
    origin = {n: document_of_windows(documents, n, max_windows, consecutive)
              if windows[n][1] == "documents" else [-1] * len(windows[n][0]) for n in lengths}
    progress = tqdm(total=len(models) * len(lengths), desc="loss grid")
    rows = []
    for length, (batch, source) in windows.items():
        generator = torch.Generator().manual_seed(derived_seed(seed, "loss", length))
        targets = batch.repeat_interleave(mc, dim=0)
        t = ((torch.arange(mc) + torch.rand(len(batch), 1, generator=generator)) / mc).flatten()
        noised = forward_process(targets, mask_token_id, t=t, generator=generator)
        for label, model_at in models.items():
            model = model_at(length)
            device, losses = model_device(model), []
            for part in torch.arange(len(targets)).split(batch_size):
                # Logits of the masked positions only (a whole 32K window of LLaDA-8B is 8 GiB
                # of bf16 logits), in row-major order: split back into rows by masked count.
                masked = noised.masked[part]
                logits = scored_logits(model, noised.noisy_ids[part].to(device),
                                       masked.to(device)).cpu()
                per_row = logits.split(masked.sum(dim=1).tolist())
                losses += [masked_diffusion_loss(row_logits, targets[row:row + 1],
                                                 noised.masked[row:row + 1],
                                                 noised.p_mask[row:row + 1]).item()
                           for row_logits, row in zip(per_row, part.tolist(), strict=True)]
            per_window = torch.tensor(losses).view(len(batch), mc).mean(dim=1)
            rows += [dict(rope_columns(model, label), method="diffusion_loss", length=length,
                          window=index, document=origin[length][index], source=source,
                          value=value, mc=mc, seed=seed)
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
