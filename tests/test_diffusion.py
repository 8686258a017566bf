"""LLaDA's forward process, loss and Monte-Carlo likelihood against closed forms."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from minillada.modeling.diffusion import (
    NoisedBatch,
    diffusion_loss,
    document_runs,
    forward_process,
    mask_exactly,
    mc_log_likelihood,
)

MASK = 0
EPS = 1e-3


def _t_of(p_mask: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return (p_mask - eps) / (1 - eps)


def _mean_and_se(estimates: torch.Tensor) -> tuple[float, float]:
    return estimates.mean().item(), (estimates.std() / math.sqrt(len(estimates))).item()


# -- forward process ---------------------------------------------------------------------------


def test_given_t_sets_p_and_masks_about_p_of_tokens():
    ids = torch.randint(1, 50, (4, 4000), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    noised = forward_process(ids, MASK, t=t, generator=torch.Generator().manual_seed(1))
    assert isinstance(noised, NoisedBatch)
    expected_p = (1 - EPS) * t + EPS
    torch.testing.assert_close(noised.p_mask, expected_p[:, None].expand(4, 4000))
    fraction = noised.masked.float().mean(dim=1)
    assert torch.allclose(fraction, expected_p, atol=4 * math.sqrt(0.25 / 4000))
    assert noised.masked[3].all()  # p = 1 masks every token
    assert (noised.noisy_ids[noised.masked] == MASK).all()
    assert torch.equal(noised.noisy_ids[~noised.masked], ids[~noised.masked])


def test_unmaskable_and_padding_are_never_masked():
    ids = torch.randint(1, 50, (8, 32), generator=torch.Generator().manual_seed(0))
    maskable = torch.rand(8, 32, generator=torch.Generator().manual_seed(1)) < 0.5
    doc_ids = torch.zeros(8, 32, dtype=torch.long)
    doc_ids[:, 24:] = -1
    for t_per in ("sequence", "document"):
        noised = forward_process(ids, MASK, t=torch.ones(8) if t_per == "sequence" else None,
                                 t_per=t_per, doc_ids=doc_ids, maskable=maskable,
                                 generator=torch.Generator().manual_seed(2))
        allowed = maskable & (doc_ids >= 0)
        assert not noised.masked[~allowed].any()
    # at t = 1 every allowed position is masked
    full = forward_process(ids, MASK, t=torch.ones(8), doc_ids=doc_ids, maskable=maskable)
    assert torch.equal(full.masked, allowed)


def test_stratified_t_has_one_value_in_each_stratum():
    ids = torch.ones(16, 4, dtype=torch.long)
    for seed in range(5):
        noised = forward_process(ids, MASK, stratified=True,
                                 generator=torch.Generator().manual_seed(seed))
        t = _t_of(noised.p_mask[:, 0].double()).sort().values
        strata = torch.arange(16) / 16
        assert ((t >= strata - 1e-6) & (t < strata + 1 / 16 + 1e-6)).all()
    # the strata are permuted over rows, not in row order
    assert not torch.equal(_t_of(noised.p_mask[:, 0]).argsort(), torch.arange(16))


def test_per_document_t_is_constant_within_each_document_run():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, -1],
                            [3, 3, 3, 3, 3, 3, 4, 4, 4, 4]])
    runs, count = document_runs(doc_ids)
    assert count == 6
    assert runs.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [4, 4, 4, 4, 4, 4, 5, 5, 5, 5]]
    ids = torch.ones_like(doc_ids)
    for stratified in (False, True):
        noised = forward_process(ids, MASK, doc_ids=doc_ids, t_per="document",
                                 stratified=stratified, generator=torch.Generator().manual_seed(0))
        p = noised.p_mask
        per_run = [p[runs == r] for r in range(count)]
        assert all((values == values[0]).all() for values in per_run)
        assert len({values[0].item() for values in per_run}) == count
        if stratified:
            t = _t_of(torch.stack([v[0] for v in per_run]).double()).sort().values
            assert ((t >= torch.arange(count) / count - 1e-6)
                    & (t < (torch.arange(count) + 1) / count + 1e-6)).all()


def test_forward_process_is_seeded():
    ids = torch.randint(1, 50, (4, 16), generator=torch.Generator().manual_seed(0))
    a = forward_process(ids, MASK, generator=torch.Generator().manual_seed(7))
    b = forward_process(ids, MASK, generator=torch.Generator().manual_seed(7))
    c = forward_process(ids, MASK, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.p_mask, c.p_mask)


def test_forward_process_rejects_bad_input():
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="'token'"):
        forward_process(ids, MASK, t_per="token")
    with pytest.raises(ValueError, match="needs doc_ids"):
        forward_process(ids, MASK, t_per="document")
    with pytest.raises(ValueError, match="maskable"):
        forward_process(ids, MASK, maskable=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        forward_process(ids, MASK, t=torch.ones(3))
    with pytest.raises(ValueError, match="stratified"):
        forward_process(ids, MASK, t=torch.ones(2), stratified=True)
    with pytest.raises(ValueError, match="eps"):
        forward_process(ids, MASK, eps=0.0)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        forward_process(ids[0], MASK)


# -- loss --------------------------------------------------------------------------------------


def test_loss_matches_a_hand_computed_case():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    targets = torch.tensor([[0, 1, 2]])
    masked = torch.tensor([[True, False, True]])
    p_mask = torch.tensor([[0.5, 0.5, 0.25]])
    ce_first = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_last = math.log(3)
    expected = (ce_first / 0.5 + ce_last / 0.25) / 3  # divided by B x L, not by the masked count
    assert diffusion_loss(logits, targets, masked, p_mask).item() == pytest.approx(expected)
    none = torch.zeros_like(masked)
    assert diffusion_loss(logits, targets, none, p_mask).item() == 0.0
    with pytest.raises(ValueError, match="p_mask"):
        diffusion_loss(logits, targets, masked, p_mask[:, :2])


def test_row_tokens_normalise_each_row_like_llada_sft():
    logits = torch.zeros(2, 4, 3)  # uniform: CE = log 3 everywhere
    targets = torch.zeros(2, 4, dtype=torch.long)
    masked = torch.tensor([[True, True, False, False], [False, False, False, True]])
    p_mask = torch.full((2, 4), 0.5)
    log3 = math.log(3)
    # Row 0 is a pre-training row (/ L = 4), row 1 an SFT row with a 1-token answer (/ 1).
    expected = ((2 * log3 / 0.5) / 4 + (log3 / 0.5) / 1) / 2
    loss = diffusion_loss(logits, targets, masked, p_mask, row_tokens=torch.tensor([4, 1]))
    assert loss.item() == pytest.approx(expected)
    every_row_l = diffusion_loss(logits, targets, masked, p_mask, row_tokens=torch.tensor([4, 4]))
    assert every_row_l.item() == pytest.approx(diffusion_loss(logits, targets, masked, p_mask))
    with pytest.raises(ValueError, match=r"row_tokens must be \[B\] = \[2\].*\[4, 0\]"):
        diffusion_loss(logits, targets, masked, p_mask, row_tokens=torch.tensor([4, 0]))


@pytest.mark.parametrize("options", [
    {}, {"stratified": True}, {"t_per": "document"}, {"t_per": "document", "stratified": True},
])
def test_loss_is_unbiased_for_a_context_free_model(options):
    """With logits fixed per position, E[1{masked} / p] = 1 at every allowed position, so
    E[loss] = sum over allowed positions of CE / (B x L), whatever the law of t."""
    generator = torch.Generator().manual_seed(0)
    length, vocab, rows, chunks = 12, 7, 640, 40
    table = torch.randn(length, vocab, generator=generator) * 2
    targets = torch.randint(vocab, (length,), generator=generator)
    ce = F.cross_entropy(table, targets, reduction="none")
    doc_ids = torch.tensor([0] * 5 + [1] * 4 + [-1] * 3).expand(rows, length)
    allowed = doc_ids[0] >= 0
    expected = ce[allowed].sum().item() / length

    logits, ids = table.expand(rows, length, vocab), targets.expand(rows, length)
    estimates = torch.tensor([
        diffusion_loss(logits, ids, *forward_process(ids, MASK, doc_ids=doc_ids,
                                                     generator=generator, **options)[1:])
        for _ in range(chunks)
    ])
    mean, se = _mean_and_se(estimates)
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    assert se < 0.03 * expected  # the check has power: a missing 1/p would be off by ~50%


# -- Monte-Carlo likelihood --------------------------------------------------------------------


class TableModel:
    """Logits table[i] * (1 + slope x masked fraction of the row) at position i: context-free
    for slope = 0. Records every input it sees."""

    def __init__(self, table: torch.Tensor, slope: float = 0.0) -> None:
        self.table, self.slope, self.inputs = table, slope, []

    def __call__(self, input_ids, positions=None, doc_ids=None):
        self.inputs.append(input_ids.clone())
        fraction = (input_ids == MASK).double().mean(dim=1)[:, None, None]
        logits = self.table[: input_ids.shape[1]] * (1 + self.slope * fraction)
        return SimpleNamespace(logits=logits)


def _likelihood(model, prompt, answer, seed, **kwargs):
    return mc_log_likelihood(model, prompt, answer, mask_token_id=MASK,
                             generator=torch.Generator().manual_seed(seed), **kwargs)


def test_likelihood_is_exact_for_every_draw_when_each_token_costs_the_same():
    prompt, answer = torch.tensor([5, 6, 7]), torch.tensor([3, 1, 4, 1, 5, 2, 6])
    table = torch.zeros(10, 8, dtype=torch.float64)
    table[torch.arange(3, 10), answer] = 2.0  # every answer token: p = e^2 / (e^2 + 7)
    exact = 7 * math.log(math.exp(2) / (math.exp(2) + 7))
    for seed in range(5):
        value = _likelihood(TableModel(table), prompt, answer, seed, mc=5, batch_size=2)
        assert value.ndim == 0 and value.item() == pytest.approx(exact, rel=1e-6)  # float32 CE


def test_likelihood_is_unbiased_for_a_context_free_model():
    generator = torch.Generator().manual_seed(0)
    prompt, answer = torch.tensor([5, 6]), torch.tensor([3, 1, 4, 1, 5])
    table = torch.randn(7, 8, generator=generator, dtype=torch.float64) * 2
    exact = -F.cross_entropy(table[2:], answer, reduction="sum").item()
    estimates = torch.tensor([_likelihood(TableModel(table), prompt, answer, s, mc=4).item()
                              for s in range(300)])
    mean, se = _mean_and_se(estimates)
    assert abs(mean - exact) < 4 * se and se < 0.03 * abs(exact), (mean, exact, se)


def test_likelihood_matches_the_enumerated_expectation_for_a_context_dependent_model():
    """E = -(1/L) sum_l (L/l) x mean over all l-subsets S of sum_{i in S} CE_i(S), enumerated."""
    generator = torch.Generator().manual_seed(1)
    prompt, answer = torch.tensor([5, 6]), torch.tensor([3, 1, 4, 1, 5])
    model = TableModel(torch.randn(7, 8, generator=generator, dtype=torch.float64), slope=3.0)
    n = len(answer)
    expected = 0.0
    for count in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), count))
        for subset in subsets:
            noisy = answer.clone()
            noisy[list(subset)] = MASK
            logits = model(torch.cat([prompt, noisy])[None]).logits[0, 2:]
            ce = F.cross_entropy(logits, answer, reduction="none")
            expected -= (n / count) * ce[list(subset)].sum().item() / len(subsets) / n
    estimates = torch.tensor([_likelihood(model, prompt, answer, s, mc=n).item()
                              for s in range(300)])
    mean, se = _mean_and_se(estimates)
    assert abs(mean - expected) < 4 * se and se < 0.03 * abs(expected), (mean, expected, se)


def test_likelihood_masks_exactly_l_answer_tokens_stratified_over_draws():
    prompt = torch.tensor([[5, 6, 7], [7, 6, 5]])
    answer = torch.tensor([[3, 1, 4, 1], [2, 7, 1, 8]])
    model = TableModel(torch.zeros(7, 9))
    values = _likelihood(model, prompt, answer, 0, mc=12, batch_size=5)
    assert values.shape == (2,)
    torch.testing.assert_close(values, torch.full((2,), -4 * math.log(9)), check_dtype=False)
    rows = torch.cat(model.inputs)
    assert len(rows) == 24
    assert torch.equal(rows[:12, :3], prompt[0].expand(12, 3))  # the prompt is never masked
    assert torch.equal(rows[12:, :3], prompt[1].expand(12, 3))
    for sample in range(2):
        answers = rows[12 * sample: 12 * (sample + 1), 3:]
        kept = answers != MASK
        assert torch.equal(answers[kept], answer[sample].expand(12, 4)[kept])
        counts = (~kept).sum(dim=1)
        assert sorted(counts.tolist()) == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # each l equally
    batched = _likelihood(TableModel(torch.randn(7, 9, generator=torch.Generator())),
                          prompt, answer, 3, mc=6, batch_size=1)
    whole = _likelihood(TableModel(torch.randn(7, 9, generator=torch.Generator())),
                        prompt, answer, 3, mc=6, batch_size=100)
    torch.testing.assert_close(batched, whole)


def test_likelihood_rejects_bad_input():
    model = TableModel(torch.zeros(8, 4))
    with pytest.raises(ValueError, match="at least one token"):
        _likelihood(model, torch.tensor([1]), torch.tensor([], dtype=torch.long), 0)
    with pytest.raises(ValueError, match="mc=0"):
        _likelihood(model, torch.tensor([1]), torch.tensor([2]), 0, mc=0)
    with pytest.raises(ValueError, match=r"\[N, Lp\]"):
        _likelihood(model, torch.tensor([[1], [2]]), torch.tensor([[2]]), 0)


def test_mask_exactly_masks_l_uniform_of_the_maskable_tokens():
    maskable = torch.tensor([[False, True, True, True, False], [False] * 4 + [True], [False] * 5])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(3000):
        masked, p_mask = mask_exactly(maskable, generator)
        assert not (masked & ~maskable).any()
        assert masked[1, 4]  # a one-token answer is always masked, with p = 1
        assert p_mask[1, 4] == 1.0 and not masked[2].any()
        chosen = int(masked[0].sum())
        counts[chosen] += 1
        assert torch.allclose(p_mask[0][masked[0]], torch.tensor(chosen / 3))
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / 3000, torch.full((3,), 1 / 3), atol=0.04)  # l ~ U{1..3}
    with pytest.raises(ValueError, match=r"maskable must be \[B, L\]"):
        mask_exactly(maskable[0])


def test_mask_exactly_makes_the_sft_loss_an_unbiased_answer_nll():
    # Context-free model: the per-row SFT loss averages to the answer's summed CE / n.
    maskable = torch.tensor([[False, True, True, True]])
    ce_per_token = torch.tensor([0.0, 1.0, 2.0, 4.0])
    generator = torch.Generator().manual_seed(1)
    draws = []
    for _ in range(4000):
        masked, p_mask = mask_exactly(maskable, generator)
        draws.append(float((ce_per_token[masked[0]] / p_mask[0][masked[0]]).sum() / 3))
    assert sum(draws) / len(draws) == pytest.approx(7.0 / 3, rel=0.02)
