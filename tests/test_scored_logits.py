"""Logits only where they are scored (`diffusion.scored_logits`): the head runs at the scored
positions, and the likelihood, the chunk loss, the paired loss grid, a laid-out model and the
sampler give what the whole row's logits gave (the old path, `WholeRows`)."""

from __future__ import annotations

import pytest
import torch

from minillada.evals.layout import LaidOutModel, Layout
from minillada.evals.models import fixed_model, rope_variants
from minillada.evals.perplexity import masked_chunk_losses, paired_loss_grid
from minillada.modeling.diffusion import generate, mc_log_likelihood, scored_logits, supports_scored
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

MASK, EOD, VOCAB = 0, 3, 61
# The gathered head is the same matmul on fewer rows: equal up to its blocking (0 on CPU, where
# these tests measure max |diff| = 0).
CLOSE = dict(rtol=1e-6, atol=1e-6)


def tiny() -> LLaDAModelLM:
    torch.manual_seed(0)
    return LLaDAModelLM(LLaDAConfig(vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=2,
                                    mlp_hidden_size=48, max_sequence_length=16)).eval()


class WholeRows:
    """The model without `supports_scored` (as a Hugging Face wrapper would be): every call
    computes the whole row's logits."""

    def __init__(self, model: LLaDAModelLM) -> None:
        self.model = model

    def __call__(self, input_ids: torch.Tensor, **inputs):
        return self.model(input_ids, **inputs)


def head_rows(model: LLaDAModelLM) -> list[int]:
    """The number of rows the output head is given at each call, recorded from now on."""
    rows: list[int] = []
    model.model.transformer.ff_out.register_forward_hook(
        lambda module, args, output: rows.append(args[0].shape[:-1].numel()))
    return rows


def random_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(5, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def test_scored_logits_are_the_whole_rows_logits_at_the_scored_positions():
    model = tiny()
    ids = random_ids((3, 40), 1)
    scored = torch.rand(3, 40, generator=torch.Generator().manual_seed(2)) < 0.3
    rows = head_rows(model)
    with torch.no_grad():
        full = model(ids).logits
        gathered = scored_logits(model, ids, scored)
        fallback = scored_logits(WholeRows(model), ids, scored)
    assert rows == [3 * 40, int(scored.sum()), 3 * 40]  # the head ran at the scored rows only
    assert torch.equal(fallback, full[scored])
    torch.testing.assert_close(gathered, full[scored], **CLOSE)
    assert supports_scored(model) and not supports_scored(WholeRows(model))
    assert supports_scored(rope_variants(model, ["default"])["default"](40))  # RopeSetting
    with pytest.raises(ValueError, match="scored must be a bool tensor of shape"):
        scored_logits(model, ids, scored[:, :-1])


@pytest.mark.parametrize("separator", [False, True])
def test_a_laid_out_model_maps_the_scored_positions_through_its_layout(separator):
    model = tiny()
    layout = Layout("adaptive_eod" if separator else "direct", restart_positions=not separator)
    ids = random_ids((2, 18), 3)
    scored = torch.rand(2, 18, generator=torch.Generator().manual_seed(4)) < 0.4
    for inner in (model, WholeRows(model)):
        run = LaidOutModel(inner, layout, EOD).documents([5, 6, 99])
        assert supports_scored(run)
        with torch.no_grad():
            full, gathered = run(ids).logits, run(ids, scored=scored).logits
        torch.testing.assert_close(gathered, full[scored], **CLOSE)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_the_sampler_asks_for_the_current_blocks_logits_only(cfg_scale):
    """Through a layout with separators: the head sees the block's positions, and the tokens are
    those of the whole rows' logits."""
    model = tiny()
    rows = head_rows(model)
    laid = LaidOutModel(model, Layout("eod"), EOD)
    prompt = random_ids((2, 13), 5)
    settings = dict(gen_length=12, block_length=4, steps=6, cfg_scale=cfg_scale,
                    mask_token_id=MASK)
    scored = generate(laid.documents([6, 99]), prompt, **settings)
    assert rows == [2 * 4 * (2 if cfg_scale else 1)] * 6
    whole = generate(LaidOutModel(WholeRows(model), Layout("eod"), EOD).documents(
        [6, 99]), prompt, **settings)
    assert torch.equal(scored, whole)


def test_likelihood_and_chunk_losses_from_scored_logits_equal_the_whole_rows():
    model = tiny()
    window = random_ids((40,), 6)
    rows = head_rows(model)
    values = {}
    for name, scorer in (("scored", model), ("whole", WholeRows(model))):
        log_likelihood = mc_log_likelihood(
            scorer, window[:-8], window[-8:], mc=6, batch_size=4, mask_token_id=MASK,
            generator=torch.Generator().manual_seed(7))
        losses = masked_chunk_losses(scorer, window, chunk=8, mc=6, batch_size=4,
                                     mask_token_id=MASK,
                                     generator=torch.Generator().manual_seed(8))
        values[name] = (log_likelihood, losses)
    assert max(rows[:4]) <= 4 * 8 < min(rows[4:])  # the answers' masked tokens, not the rows
    assert float(values["scored"][0]) == pytest.approx(float(values["whole"][0]), rel=1e-6)
    assert values["scored"][1].tolist() == pytest.approx(values["whole"][1].tolist(), rel=1e-6)


def test_the_paired_loss_grid_from_scored_logits_equals_the_whole_rows():
    model = tiny()
    documents = [random_ids((50,), seed).tolist() for seed in range(3)]
    table = paired_loss_grid({"scored": fixed_model(model), "whole": fixed_model(WholeRows(model))},
                             documents, [16, 24], mask_token_id=MASK, eod_token_id=EOD, mc=3,
                             max_windows=3, batch_size=4)
    scored, whole = (table[table.model == name]["value"].tolist() for name in ("scored", "whole"))
    assert len(scored) == 2 * 3 and scored == pytest.approx(whole, rel=1e-6)
