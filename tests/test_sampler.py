"""LLaDA's semi-autoregressive sampler: schedule, block order, confidence order, guidance."""

from types import SimpleNamespace

import pytest
import torch

from minillada.modeling.diffusion import generate, transfer_schedule

MASK = 0


class RecordingModel:
    """Context-free logits `table[i]` at position i (or `logits_fn(input_ids)`); records inputs."""

    def __init__(self, table=None, logits_fn=None) -> None:
        self.table, self.logits_fn, self.inputs = table, logits_fn, []

    def __call__(self, input_ids, positions=None, doc_ids=None):
        self.inputs.append(input_ids.clone())
        if self.logits_fn is not None:
            return SimpleNamespace(logits=self.logits_fn(input_ids))
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.table[:length].expand(batch, length, -1))

    def committed_per_step(self, prompt_length: int) -> list[int]:
        """Tokens committed by each step (the generation ends with none masked)."""
        masked = [int((x[0, prompt_length:] == MASK).sum()) for x in self.inputs]
        return [a - b for a, b in zip(masked, [*masked[1:], 0], strict=True)]


def _confident_table(length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Random logits whose argmax is never the mask token (id 0)."""
    table = torch.randn(length, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    table[:, MASK] = -1e4
    return table


def _generate(model, prompt, **kwargs):
    return generate(model, prompt, mask_token_id=MASK, **kwargs)


def test_schedule_spreads_tokens_evenly_with_the_remainder_first():
    assert transfer_schedule(10, 10, 4) == [[3, 3, 2, 2]]
    assert transfer_schedule(8, 4, 4) == [[2, 2], [2, 2]]
    assert transfer_schedule(9, 3, 6) == [[2, 1], [2, 1], [2, 1]]
    assert transfer_schedule(32, 32, 16) == [[2] * 16]
    assert transfer_schedule(4, 2, 8) == [[1, 1, 0, 0], [1, 1, 0, 0]]  # more steps than tokens
    for args in [(64, 16, 12), (30, 10, 9), (7, 7, 3)]:
        schedule = transfer_schedule(*args)
        assert all(sum(block) == args[1] for block in schedule)
        assert all(max(block) - min(block) <= 1 for block in schedule)


def test_committed_tokens_per_step_follow_the_schedule():
    prompt = torch.tensor([[5, 6, 7]])
    for gen_length, block_length, steps in [(10, 10, 4), (9, 3, 6), (8, 8, 8)]:
        model = RecordingModel(_confident_table(3 + gen_length, 11))
        _generate(model, prompt, gen_length=gen_length, block_length=block_length, steps=steps)
        schedule = transfer_schedule(gen_length, block_length, steps)
        expected = [count for block in schedule for count in block]
        assert len(model.inputs) == steps  # one forward pass per step
        assert (model.inputs[0][:, 3:] == MASK).all()
        assert model.committed_per_step(3) == expected


def test_one_block_with_one_token_per_step_commits_the_most_confident_first():
    prompt = torch.tensor([[5, 6]])
    table = _confident_table(2 + 6, 11, seed=1)
    model = RecordingModel(table)
    out = _generate(model, prompt, gen_length=6, block_length=6, steps=6)
    confidence = table[2:].softmax(dim=-1).max(dim=-1).values
    order = []
    for before, after in zip(model.inputs, [*model.inputs[1:], out], strict=True):
        changed = (before != after)[0].nonzero().flatten().tolist()
        assert len(changed) == 1
        order.append(changed[0] - 2)
    assert order == confidence.argsort(descending=True).tolist()
    assert torch.equal(out[0, 2:], table[2:].argmax(dim=-1))
    assert torch.equal(out[:, :2], prompt)


def test_positions_right_of_the_current_block_are_never_committed_early():
    prompt = torch.tensor([[5, 6]])
    table = _confident_table(2 + 12, 11, seed=2)
    table[2 + 8:, 1] = 50.0  # the last block is by far the most confident
    for remasking in ("low_confidence", "random"):
        model = RecordingModel(table)
        _generate(model, prompt, gen_length=12, block_length=4, steps=6, remasking=remasking,
                  generator=torch.Generator().manual_seed(0))
        for step, x in enumerate(model.inputs):
            block = step // 2  # two steps per block
            assert (x[0, 2 + 4 * (block + 1):] == MASK).all(), (remasking, step)
            assert (x[0, 2:2 + 4 * block] != MASK).all()
        assert model.committed_per_step(2) == [2] * 6


def test_deterministic_at_temperature_zero_and_seeded_when_sampling():
    prompt = torch.tensor([[5, 6], [7, 8]])
    logits_fn = lambda x: torch.sin(x[..., None] * torch.arange(1.0, 12.0) +  # noqa: E731
                                    torch.arange(x.shape[1])[None, :, None])
    runs = [_generate(RecordingModel(logits_fn=logits_fn), prompt, gen_length=8, block_length=4,
                      steps=4) for _ in range(2)]
    assert torch.equal(*runs)
    sampled = [_generate(RecordingModel(logits_fn=logits_fn), prompt, gen_length=8,
                         block_length=4, steps=4, temperature=1.0, remasking="random",
                         generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert torch.equal(sampled[0], sampled[1])
    assert not torch.equal(sampled[0], sampled[2])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_at_temperature_draws_from_the_tempered_softmax(temperature):
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    table = torch.cat([torch.full((1, 4), -1e4), logits.expand(1, 4)])
    table[:, MASK] = -1e4
    rows = 6000
    out = _generate(RecordingModel(table), torch.full((rows, 1), 3), gen_length=1,
                    block_length=1, steps=1, temperature=temperature,
                    generator=torch.Generator().manual_seed(0))
    frequency = torch.bincount(out[:, 1], minlength=4).double() / rows
    expected = (table[1].double() / temperature).softmax(dim=-1)
    tolerance = 4 * (expected * (1 - expected) / rows).sqrt() + 1e-9
    assert ((frequency - expected).abs() <= tolerance).all(), (frequency, expected)


def test_classifier_free_guidance_extrapolates_away_from_the_unconditional_logits():
    # token 1 wins with the prompt but also without it; token 2 is what the prompt adds
    cond = torch.tensor([0.0, 2.0, 1.8, 0.0])
    uncond = torch.tensor([0.0, 2.0, 0.0, 0.0])

    def logits_fn(x):
        prompt_masked = (x[:, :1] == MASK)[:, :, None]
        row = torch.where(prompt_masked, uncond, cond)
        return row.expand(-1, x.shape[1], -1)

    prompt = torch.tensor([[3]])
    plain = _generate(RecordingModel(logits_fn=logits_fn), prompt, gen_length=1,
                      block_length=1, steps=1)
    model = RecordingModel(logits_fn=logits_fn)
    guided = _generate(model, prompt, gen_length=1, block_length=1, steps=1, cfg_scale=1.0)
    assert plain[0, 1] == 1 and guided[0, 1] == 2  # 2 + 2 (1.8 - 0) > 2 + 2 (2 - 2)
    (pair,) = model.inputs
    assert torch.equal(pair, torch.tensor([[3, MASK], [MASK, MASK]]))  # one batched pass


def test_bad_sampler_arguments_are_named():
    model, prompt = RecordingModel(_confident_table(8, 5)), torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="gen_length=6 is not a multiple of block_length=4"):
        _generate(model, prompt, gen_length=6, block_length=4, steps=2)
    with pytest.raises(ValueError, match="steps=3 is not divisible by the number of blocks 2"):
        _generate(model, prompt, gen_length=4, block_length=2, steps=3)
    with pytest.raises(ValueError, match="'greedy'"):
        _generate(model, prompt, gen_length=4, block_length=4, steps=2, remasking="greedy")
    with pytest.raises(ValueError, match="temperature"):
        _generate(model, prompt, gen_length=4, block_length=4, steps=2, temperature=-1.0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        _generate(model, prompt, gen_length=4, block_length=4, steps=0)
    with pytest.raises(ValueError, match=r"\[B, Lp\]"):
        _generate(model, prompt[0], gen_length=4, block_length=4, steps=2)
    assert model.inputs == []  # every check runs before any forward pass


def _full_row_generate(model, prompt_ids, gen_length, block_length, steps, temperature,
                       remasking, cfg_scale, mask_token_id, generator):
    """The sampler as it was before it asked for the current block's logits only: every step
    computes the whole row's logits (guidance included) and takes them all to float64 (the
    reference of the tests below). Its Gumbel noise covers the current block only, as the
    sampler's does now (it was drawn for the whole row: B x L x V float64)."""
    from minillada.modeling.diffusion import _rand

    batch, prompt_length = prompt_ids.shape
    x = torch.cat([prompt_ids, prompt_ids.new_full((batch, gen_length), mask_token_id)], dim=1)
    still_masked = torch.zeros_like(x, dtype=torch.bool)
    still_masked[:, prompt_length:] = True
    for block, counts in enumerate(transfer_schedule(gen_length, block_length, steps)):
        block_start = prompt_length + block * block_length
        block_end = block_start + block_length
        for count in (c for c in counts if c):
            logits = model(x).logits
            if cfg_scale:
                unconditional = x.clone()
                unconditional[:, :prompt_length] = mask_token_id
                cond, uncond = model(torch.cat([x, unconditional])).logits.chunk(2)
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
            logits = logits.to(torch.float64, copy=True)
            log_norm = logits.logsumexp(dim=-1)
            logits[..., mask_token_id] = -torch.inf
            chosen = logits.argmax(dim=-1)
            if temperature > 0:
                window = logits[:, block_start:block_end]
                uniform = _rand(window.shape, generator, x.device, torch.float64)
                gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))
                chosen[:, block_start:block_end] = (window / temperature + gumbel).argmax(dim=-1)
            chosen_logit = logits.gather(-1, chosen[..., None])[..., 0]
            score = ((chosen_logit - log_norm).exp() if remasking == "low_confidence"
                     else _rand(chosen.shape, generator, x.device, torch.float64))
            score = score.masked_fill(~still_masked, -torch.inf)
            score[:, block_end:] = -torch.inf
            commit = torch.zeros_like(still_masked)
            commit.scatter_(1, score.topk(count, dim=1).indices, True)
            x = torch.where(commit, chosen, x)
            still_masked &= ~commit
    return x


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
@pytest.mark.parametrize("scored_head", [True, False])
def test_the_blocks_logits_decode_token_for_token_like_the_whole_rows(temperature, remasking,
                                                                      cfg_scale, scored_head):
    """The head at the current block only (`scored_head`: LLaDAModelLM's `scored`; else the
    whole row's logits, gathered) decodes the same tokens as the old whole-row sampler."""
    from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(vocab_size=97, d_model=32, n_heads=4, n_layers=2,
                                     mlp_hidden_size=48, max_sequence_length=16)).eval()
    sampled = model if scored_head else (lambda ids, **inputs: model(ids, **inputs))
    prompt = torch.randint(1, 97, (3, 11), generator=torch.Generator().manual_seed(1))
    for gen_length, block_length, steps in ((24, 8, 12), (16, 16, 16), (12, 4, 6)):
        args = (gen_length, block_length, steps, temperature, remasking, cfg_scale)
        windowed = generate(sampled, prompt, *args, mask_token_id=MASK,
                            generator=torch.Generator().manual_seed(7))
        whole = _full_row_generate(model, prompt, *args, MASK, torch.Generator().manual_seed(7))
        assert torch.equal(windowed, whole), args
