"""LLaDA's masked-diffusion objective, Monte-Carlo likelihood and semi-autoregressive sampler.

A "model" is any callable `model(input_ids, positions=None, doc_ids=None)` whose result has
`.logits` of shape [B, L, V]; it predicts the original token at every position. A model whose
`supports_scored` is true also takes `scored` ([B, L] bool) and returns logits only there
([N, V]); `scored_logits` uses that when it can, so that the likelihood and the sampler compute
the head only at the positions they score (the head's logits of a 128K row are 31 GiB in bf16 at
LLaDA-8B's vocabulary).

- Forward process: each token is masked independently with p = (1 - eps) t + eps, t ~ U[0, 1]
  per sequence (or per document), so that every t masks something in expectation.
- Loss: sum over masked tokens of CE / p, divided by B x L (an upper bound on the NLL; in
  expectation every position contributes its CE once, whatever t).
- Likelihood: mask exactly l ~ U{1..L} answer tokens, weight the CE sum by L / l (unbiased).
- Sampler: blocks decoded left to right; each step commits the most confident (or random)
  predictions at still-masked positions of the current block.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from minillada.common.names import T_PER

REMASKING = ("low_confidence", "random")


class NoisedBatch(NamedTuple):
    """Output of `forward_process`; all [B, L]."""

    noisy_ids: Tensor  # input ids with masked positions replaced by the mask token
    masked: Tensor  # bool, True where masked
    p_mask: Tensor  # float32, the masking probability p of each position


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) drawn on the generator's device (a CPU generator can drive a GPU run), then moved."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def _draw_t(count: int, stratified: bool, generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """`count` times in [0, 1): i.i.d. uniform, or stratified: one in each [i/n, (i+1)/n),
    randomly permuted so that the stratum does not follow the row order."""
    u = _rand((count,), generator, device)
    if not stratified:
        return u
    source = generator.device if generator is not None else device
    strata = torch.randperm(count, generator=generator, device=source).to(device)
    return (strata + u) / count


def document_runs(doc_ids: Tensor) -> tuple[Tensor, int]:
    """Index of each token's (row, contiguous run of equal doc id), numbered 0..R-1 over the
    batch, and R. A run is one document (or the padding) of one row."""
    starts = torch.ones_like(doc_ids, dtype=torch.long)
    starts[:, 1:] = (doc_ids[:, 1:] != doc_ids[:, :-1]).long()
    runs = starts.cumsum(dim=1) - 1
    per_row = runs[:, -1] + 1
    offsets = per_row.cumsum(dim=0) - per_row
    return runs + offsets[:, None], int(per_row.sum())


def forward_process(input_ids: Tensor, mask_token_id: int, *, eps: float = 1e-3,
                    t: Tensor | None = None, generator: torch.Generator | None = None,
                    doc_ids: Tensor | None = None, t_per: str = "sequence",
                    stratified: bool = False, maskable: Tensor | None = None) -> NoisedBatch:
    """Mask each maskable token of `input_ids` [B, L] independently with p = (1 - eps) t + eps.

    t: given as [B] (per row) or [B, L] (per token), or drawn U[0, 1] per row
    (`t_per="sequence"`) or per (row, document) run of `doc_ids` (`t_per="document"`);
    `stratified` draws the n values of t one per stratum [i/n, (i+1)/n) (lower variance).
    Never masked: positions where `maskable` is False, and padding (`doc_ids == -1`).
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    if not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1], got {eps}")
    if t_per not in T_PER:
        raise ValueError(f"unknown t_per {t_per!r}; choose one of {T_PER}")
    for name, tensor in (("doc_ids", doc_ids), ("maskable", maskable)):
        if tensor is not None and tensor.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, input_ids "
                             f"{tuple(input_ids.shape)}")
    if t_per == "document" and doc_ids is None:
        raise ValueError("t_per='document' needs doc_ids")
    if t is not None and (t_per != "sequence" or stratified):
        raise ValueError("a given t excludes t_per='document' and stratified=True")
    batch, length = input_ids.shape
    device = input_ids.device

    if t is not None:
        if t.shape not in ((batch,), (batch, length)):
            raise ValueError(f"t must have shape ({batch},) or ({batch}, {length}), "
                             f"got {tuple(t.shape)}")
        t_tokens = (t[:, None] if t.ndim == 1 else t).to(device, torch.float32)
    elif t_per == "sequence":
        t_tokens = _draw_t(batch, stratified, generator, device)[:, None]
    else:
        runs, count = document_runs(doc_ids.to(device))
        t_tokens = _draw_t(count, stratified, generator, device)[runs]
    p_mask = ((1 - eps) * t_tokens + eps).expand(batch, length)

    allowed = torch.ones_like(input_ids, dtype=torch.bool)
    if maskable is not None:
        allowed &= maskable.to(device, torch.bool)
    if doc_ids is not None:
        allowed &= doc_ids.to(device) >= 0
    masked = (_rand((batch, length), generator, device) < p_mask) & allowed
    noisy_ids = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    return NoisedBatch(noisy_ids, masked, p_mask.contiguous())


def mask_exactly(maskable: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """LLaDA's low-variance masking of a response (its SFT and likelihood estimator): in each row
    with n >= 1 maskable tokens draw l ~ U{1..n}, mask exactly l of them chosen uniformly, and give
    them p = l / n (so CE / p, summed and divided by n, is (1 / l) x the sum of their CE).

    Returns (masked [B, L] bool, p_mask [B, L] float32, 1 where nothing is masked). A 1-token
    answer is then always masked with weight 1, where p-masking would mask it only a fraction t of
    the time, with weight 1 / p.
    """
    if maskable.ndim != 2:
        raise ValueError(f"maskable must be [B, L], got shape {tuple(maskable.shape)}")
    maskable = maskable.bool()
    device = maskable.device
    counts = maskable.sum(dim=1)
    u = _rand((maskable.shape[0],), generator, device)
    chosen = (u * counts).floor().long() + 1  # l ~ U{1..n}
    # Rank the maskable positions of each row in a random order; the first l are masked.
    keys = _rand(tuple(maskable.shape), generator, device).masked_fill(~maskable, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    masked = maskable & (rank < chosen[:, None])
    p_mask = torch.where(masked, (chosen / counts.clamp(min=1)).float()[:, None], 1.0)
    return masked, p_mask


def diffusion_loss(logits: Tensor, targets: Tensor, masked: Tensor, p_mask: Tensor,
                   row_tokens: Tensor | None = None) -> Tensor:
    """Mean over rows of (sum over the row's masked positions of CE(logits, target) / p_mask)
    divided by `row_tokens` [B] (default L, every position masked or not: LLaDA's pre-training
    loss, sum / (B x L)). SFT rows pass their answer length (LLaDA's SFT normalisation).
    CE is computed in float32."""
    if logits.ndim != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, L, V] with [B, L] = targets "
                         f"{tuple(targets.shape)}")
    return masked_diffusion_loss(logits[masked], targets, masked, p_mask, row_tokens)


def masked_diffusion_loss(masked_logits: Tensor, targets: Tensor, masked: Tensor, p_mask: Tensor,
                          row_tokens: Tensor | None = None) -> Tensor:
    """`diffusion_loss` from the logits of the masked positions only: `masked_logits` [N, V] in
    `targets[masked]` (row-major) order, e.g. `scored_logits(model, noisy_ids, masked)`."""
    if masked.shape != targets.shape or p_mask.shape != targets.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and p_mask {tuple(p_mask.shape)} must "
                         f"match targets {tuple(targets.shape)}")
    labels = targets[masked]
    if masked_logits.ndim != 2 or len(masked_logits) != len(labels):
        raise ValueError(f"masked_logits {tuple(masked_logits.shape)} must be [N, V] with N = "
                         f"{len(labels)} masked positions")
    ce = F.cross_entropy(masked_logits.float(), labels, reduction="none")
    if row_tokens is None:
        return (ce / p_mask[masked]).sum() / targets.numel()
    if row_tokens.shape != targets.shape[:1] or bool((row_tokens <= 0).any()):
        raise ValueError(f"row_tokens must be [B] = [{targets.shape[0]}] of positive counts, got "
                         f"{row_tokens.tolist()}")
    rows = masked.nonzero()[:, 0]
    per_row = torch.zeros(targets.shape[0], device=ce.device).index_add_(0, rows,
                                                                      ce / p_mask[masked])
    return (per_row / row_tokens.to(per_row)).mean()


def model_device(model, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of a model's first parameter; `fallback` for a model without parameters."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device(fallback)


def supports_scored(model) -> bool:
    """Whether `model(input_ids, ..., scored=mask)` returns logits only at `mask` ([N, V])."""
    return bool(getattr(model, "supports_scored", False))


def scored_logits(model, input_ids: Tensor, scored: Tensor, **inputs) -> Tensor:
    """The logits [N, V] of the `scored` positions ([B, L] bool) of `input_ids` [B, L], in
    `logits[scored]` (row-major) order; `inputs` (positions, doc_ids) go to the model.

    A model that `supports_scored` runs its transformer over every position and its final norm
    and head at the scored ones only; any other model computes the whole row's logits, of which
    the scored ones are taken (the same values, up to the head's matmul blocking).
    """
    if scored.shape != input_ids.shape or scored.dtype != torch.bool:
        raise ValueError(f"scored must be a bool tensor of shape {tuple(input_ids.shape)}, got "
                         f"{scored.dtype} of shape {tuple(scored.shape)}")
    if supports_scored(model):
        return model(input_ids, scored=scored, **inputs).logits
    return model(input_ids, **inputs).logits[scored]


@torch.no_grad()
def mc_log_likelihood(model, prompt_ids: Tensor, answer_ids: Tensor, mc: int = 128,
                      batch_size: int = 32, *, mask_token_id: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """LLaDA's Monte-Carlo lower bound on log p(answer | prompt).

    Each of the `mc` draws masks exactly l answer tokens (l ~ U{1..L}, L = answer length;
    stratified over the draws: l_j = (k + floor(j L / mc)) mod L + 1 with k ~ U{0..L-1}, so each
    l_j is uniform), chosen uniformly, and scores (L / l) x sum of CE over them; the prompt is
    never masked. Returns minus the mean over draws: [N] for prompt [N, Lp] and answer
    [N, L] (samples of equal lengths), a scalar for 1-D inputs. Rows go through the model
    `batch_size` at a time.
    """
    single = answer_ids.ndim == 1
    prompts = prompt_ids.reshape(1, -1) if single else prompt_ids
    answers = answer_ids.reshape(1, -1) if single else answer_ids
    if prompts.ndim != 2 or answers.ndim != 2 or len(prompts) != len(answers):
        raise ValueError(f"prompt_ids {tuple(prompt_ids.shape)} and answer_ids "
                         f"{tuple(answer_ids.shape)} must be [N, Lp] and [N, L] (or both 1-D)")
    if answers.shape[1] < 1:
        raise ValueError("answer_ids must hold at least one token")
    if mc < 1 or batch_size < 1:
        raise ValueError(f"mc and batch_size must be >= 1, got mc={mc}, batch_size={batch_size}")
    samples, answer_length = answers.shape
    device = model_device(model, answers.device)

    start = torch.randint(answer_length, (samples, 1), generator=generator,
                          device=generator.device if generator is not None else "cpu")
    spread = torch.arange(mc) * answer_length // mc
    n_masked = ((start.cpu() + spread) % answer_length + 1).flatten()  # [samples * mc]
    order = _rand((samples * mc, answer_length), generator, torch.device("cpu")).argsort(dim=1)
    masks = order.argsort(dim=1) < n_masked[:, None]  # exactly l_j uniformly chosen positions

    losses = torch.empty(samples * mc, dtype=torch.float64)
    sample_of_row = torch.arange(samples).repeat_interleave(mc)
    for rows in torch.arange(samples * mc).split(batch_size):
        sample = sample_of_row[rows]
        answer, mask = answers[sample].to(device), masks[rows].to(device)
        noisy = torch.where(mask, torch.full_like(answer, mask_token_id), answer)
        # Only the masked answer tokens are scored: the prompt's logits are never computed.
        scored = torch.cat([torch.zeros(len(rows), prompts.shape[1], dtype=torch.bool,
                                        device=device), mask], dim=1)
        logits = scored_logits(model, torch.cat([prompts[sample].to(device), noisy], dim=1),
                               scored)
        ce = torch.zeros(mask.shape, dtype=torch.float64, device=device)
        ce[mask] = F.cross_entropy(logits.float(), answer[mask], reduction="none").double()
        losses[rows] = (ce.sum(dim=1) * answer_length / n_masked[rows].to(device)).cpu()
    log_likelihood = -losses.view(samples, mc).mean(dim=1).to(answer_ids.device)
    return log_likelihood[0] if single else log_likelihood


def transfer_schedule(gen_length: int, block_length: int, steps: int) -> list[list[int]]:
    """Tokens committed at each step of each block: steps / blocks steps per block, and the
    block_length tokens of a block spread evenly over them, the remainder to the first steps."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length),
                        ("steps", steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} is not a multiple of "
                         f"block_length={block_length}")
    blocks = gen_length // block_length
    if steps % blocks:
        raise ValueError(f"steps={steps} is not divisible by the number of blocks {blocks} "
                         f"(gen_length / block_length)")
    per_block = steps // blocks
    base, extra = divmod(block_length, per_block)
    return [[base + 1] * extra + [base] * (per_block - extra) for _ in range(blocks)]


def _block_logits(model, x: Tensor, prompt_length: int, cfg_scale: float, mask_token_id: int,
                  block: slice) -> Tensor:
    """Logits [B, block length, V] of one step at the positions `block` of x (the current block:
    the only ones a step can commit, so the only ones whose logits are computed); with
    cfg_scale > 0, classifier-free guidance against the same sequence with the prompt masked:
    un + (cfg_scale + 1) (cond - un)."""
    rows = x
    if cfg_scale > 0:
        unconditional = x.clone()
        unconditional[:, :prompt_length] = mask_token_id
        rows = torch.cat([x, unconditional])
    scored = torch.zeros_like(rows, dtype=torch.bool)
    scored[:, block] = True
    logits = scored_logits(model, rows, scored).reshape(len(rows), block.stop - block.start, -1)
    if cfg_scale == 0:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + (cfg_scale + 1) * (cond - uncond)


@torch.no_grad()
def generate(model, prompt_ids: Tensor, gen_length: int, block_length: int, steps: int,
             temperature: float = 0.0, remasking: str = "low_confidence", cfg_scale: float = 0.0,
             *, mask_token_id: int, generator: torch.Generator | None = None) -> Tensor:
    """LLaDA's semi-autoregressive sampler; returns prompt + generation, [B, Lp + gen_length].

    gen_length mask tokens are appended and decoded in blocks of block_length, left to right,
    following `transfer_schedule`. Each step: one forward pass, with logits only for the current
    block (`scored_logits`); a prediction per position of the block (argmax, or Gumbel-max
    sampling at `temperature` in float64); each still-masked position of the block scored by the
    probability of its prediction (`low_confidence`) or at random (`random`); the top-k
    committed. A step that commits nothing (more steps than tokens in a block) is skipped,
    forward pass included. Deterministic at temperature 0 with `low_confidence`.

    The mask token is never a prediction: its logit is -inf for the choice (LLaDA's own loop
    re-masks a position that predicts it, since it re-reads `x == mask_id` every step), while the
    confidence stays the model's probability of the chosen token.
    """
    schedule = transfer_schedule(gen_length, block_length, steps)
    if remasking not in REMASKING:
        raise ValueError(f"unknown remasking {remasking!r}; choose one of {REMASKING}")
    for name, value in (("temperature", temperature), ("cfg_scale", cfg_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if (isinstance(mask_token_id, bool) or not isinstance(mask_token_id, numbers.Integral)
            or mask_token_id < 0):
        raise ValueError(f"mask_token_id must be an integer >= 0, got {mask_token_id!r}")
    mask_token_id = int(mask_token_id)
    if prompt_ids.ndim != 2:
        raise ValueError(f"prompt_ids must be [B, Lp], got shape {tuple(prompt_ids.shape)}")
    batch, prompt_length = prompt_ids.shape
    device = prompt_ids.device
    x = torch.cat([prompt_ids, prompt_ids.new_full((batch, gen_length), mask_token_id)], dim=1)
    still_masked = torch.zeros_like(x, dtype=torch.bool)
    still_masked[:, prompt_length:] = True

    for block, counts in enumerate(schedule):
        block_start = prompt_length + block * block_length
        block_end = block_start + block_length
        for count in counts:
            if count == 0:  # more steps than tokens in the block: nothing to commit
                continue
            window = _block_logits(model, x, prompt_length, cfg_scale, mask_token_id,
                                   slice(block_start, block_end)).to(torch.float64, copy=True)
            if not mask_token_id < window.shape[-1]:
                raise ValueError(f"mask_token_id {mask_token_id} is outside the model's "
                                 f"vocabulary [0, {window.shape[-1]})")
            log_norm = window.logsumexp(dim=-1)  # of every token, the mask included
            window[..., mask_token_id] = -torch.inf  # never chosen
            chosen = x.clone()
            if temperature > 0:  # noise for the block only: a whole row's is B x L x V float64
                uniform = _rand(window.shape, generator, device, torch.float64)
                gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))
                chosen[:, block_start:block_end] = (window / temperature + gumbel).argmax(dim=-1)
            else:
                chosen[:, block_start:block_end] = window.argmax(dim=-1)
            chosen_logit = window.gather(-1, chosen[:, block_start:block_end, None])[..., 0]
            score = torch.full(x.shape, -torch.inf, dtype=torch.float64, device=device)
            if remasking == "low_confidence":  # the model's probability of the chosen token
                score[:, block_start:block_end] = (chosen_logit - log_norm).exp()
            else:
                score[:, block_start:block_end] = _rand(
                    x.shape, generator, device, torch.float64)[:, block_start:block_end]
            score = score.masked_fill(~still_masked, -torch.inf)
            commit = torch.zeros_like(still_masked)
            commit.scatter_(1, score.topk(count, dim=1).indices, True)
            if not bool(chosen_logit[commit[:, block_start:block_end]].isfinite().all()):
                raise ValueError("the model's logits at a position to commit hold no finite value "
                                 "outside the mask token (or a NaN / inf): cannot decode them")
            x = torch.where(commit, chosen, x)
            still_masked &= ~commit
    return x
