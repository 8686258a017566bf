"""Evaluations: scoring, the PPL protocol against closed forms, paired masks, resumable grids."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from minillada.claims.statistics import by_needle_distance
from minillada.evals import leakage, retrieval
from minillada.evals.models import fixed_model, rope_columns, rope_variants
from minillada.evals.perplexity import (
    eval_windows,
    masked_chunk_losses,
    paired_loss_grid,
    paired_summary,
    ppl_at_lengths,
    ppl_curve,
)
from minillada.evals.retrieval import (
    GenerationSettings,
    LikelihoodScoring,
    ResultLog,
    chance_level,
    copier_chance,
    levenshtein,
    needle_score,
    run_retrieval_grid,
    token_match,
)
from minillada.modeling.diffusion import model_device

MASK = 0
EOD = 15


class KnownProbabilities(torch.nn.Module):
    """A fake mask predictor that puts probability `prob[i]` on `document[i]` at position i,
    whatever the input; the rest of the mass is spread evenly over the other tokens."""

    def __init__(self, document: torch.Tensor, prob: torch.Tensor, vocab: int = 16):
        super().__init__()
        self.document, self.prob, self.vocab = document, prob, vocab
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids, positions=None, doc_ids=None):
        self.inputs.append(input_ids.clone())
        length = input_ids.shape[1]
        prob, truth = self.prob[:length], self.document[:length]
        probs = ((1 - prob) / (self.vocab - 1))[:, None].expand(length, self.vocab).clone()
        probs[torch.arange(length), truth] = prob
        logits = probs.log().expand(input_ids.shape[0], -1, -1)
        return SimpleNamespace(logits=logits)


# ------------------------------------------------------------------------------------ scoring


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "abc", 0),
    ("12345", "54321", 4), ("a", "", 1),
])
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_needle_score_follows_needlebench():
    assert needle_score("the pass key is 12345. Done", "12345") == 100.0
    # One deletion from a 5-character answer: 0.2 * 100 * (1 - 1/5).
    assert needle_score("1234", "12345") == pytest.approx(16.0)
    assert needle_score("1 2 3 4", "12345") == pytest.approx(16.0)  # whitespace is ignored
    assert needle_score("abcde", "12345") == 0.0
    assert needle_score("", "12345") == 0.0
    # Distance against a full reference sentence, as NeedleBench does.
    assert needle_score("the key is 1234", "12345", reference="the key is 12345") == (
        pytest.approx(0.2 * 100 * (1 - 1 / 13)))
    assert needle_score("1234", "12345", partial_weight=1.0) == pytest.approx(80.0)
    with pytest.raises(ValueError, match="non-empty"):
        needle_score("x", "")
    with pytest.raises(ValueError, match="partial_weight"):
        needle_score("x", "y", partial_weight=2)


def test_token_match():
    assert token_match([5, 6, 7, 8], [5, 6, 7]) == (True, 1.0)
    assert token_match([5, 9, 7], [5, 6, 7]) == (False, pytest.approx(2 / 3))
    assert token_match([5], [5, 6]) == (False, 0.5)
    with pytest.raises(ValueError):
        token_match([1], [])


# ------------------------------------------------------------------------------ infrastructure


def test_generation_settings_validate_and_fit():
    assert GenerationSettings().fitted_to(5) == GenerationSettings(6, 6, 3)
    assert GenerationSettings(64, 64, 64).fitted_to(5) == GenerationSettings(5, 5, 5)
    with pytest.raises(ValueError, match="not a multiple of block_length"):
        GenerationSettings(gen_length=32, block_length=12)
    with pytest.raises(ValueError, match="not divisible by the number of blocks 4"):
        GenerationSettings(gen_length=32, block_length=8, steps=6)
    with pytest.raises(ValueError, match="remasking"):
        GenerationSettings(remasking="entropy")
    with pytest.raises(ValueError, match="tokens per step"):
        GenerationSettings(32, 32, 12).fitted_to(5)
    # one token a step: as many steps as answer tokens, whatever the setting's own rate
    assert GenerationSettings().fitted_to(2, tokens_per_step=1) == GenerationSettings(2, 2, 2)
    assert GenerationSettings(32, 32, 12).fitted_to(3, 1) == GenerationSettings(3, 3, 3)
    assert GenerationSettings().fitted_to(3, 2) == GenerationSettings(4, 4, 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"tokens_per_step must be a positive integer, got "
                                             f"{bad!r}"):
            GenerationSettings().fitted_to(3, bad)


def test_result_log_resumes_and_refuses_foreign_files(tmp_path):
    path = tmp_path / "grid.jsonl"
    log = ResultLog(path, key=("task", "length"))
    log.extend([{"task": "a", "length": 8, "value": 1.0}])
    log.extend([{"task": "a", "length": 16, "value": 2.0}])
    again = ResultLog(path, key=("task", "length"))
    assert again.done() == {("a", 8), ("a", 16)}
    assert again.frame()["value"].tolist() == [1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["grid.jsonl"]  # no temporary left behind
    with pytest.raises(ValueError, match="lacks key columns"):
        ResultLog(path, key=("task", "depth"))


def test_eval_windows_prefers_documents_then_concatenates():
    docs = [list(range(1, 11)), list(range(20, 24)), list(range(30, 42))]
    windows, source = eval_windows(docs, 8, max_windows=5, eod_token_id=99)
    assert source == "documents"
    assert windows.tolist() == [docs[0][:8], docs[2][:8]]
    with pytest.warns(UserWarning, match="concatenated"):
        windows, source = eval_windows(docs, 16, max_windows=5, eod_token_id=99)
    stream = [*docs[0], 99, *docs[1], 99, *docs[2], 99]
    assert source == "concatenated"
    assert windows.tolist() == [stream[:16]]
    with pytest.raises(ValueError, match="fewer than one window"):
        eval_windows(docs, 64, max_windows=5, eod_token_id=99)


# ------------------------------------------------------------------------------------ perplexity


def known_model(length: int, prob: torch.Tensor, seed: int = 0) -> KnownProbabilities:
    document = torch.randint(1, 16, (length,), generator=torch.Generator().manual_seed(seed))
    return KnownProbabilities(document, prob)


def test_chunk_loss_is_exact_for_constant_probability_and_never_masks_context():
    model = known_model(48, torch.full((48,), 0.25))
    losses = masked_chunk_losses(model, model.document[:40], chunk=8, mc=64, mask_token_id=MASK,
                                 generator=torch.Generator().manual_seed(1), batch_size=16)
    assert torch.allclose(losses, torch.full((64,), math.log(4.0)))
    noisy = torch.cat(model.inputs)
    assert torch.equal(noisy[:, :32], model.document[:32].expand(64, -1))  # context intact
    counts = (noisy[:, 32:] == MASK).sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 8 and len(set(counts.tolist())) > 4


def test_chunk_loss_is_unbiased_for_varying_probabilities():
    prob = torch.linspace(0.1, 0.9, 24)
    model = known_model(24, prob)
    losses = masked_chunk_losses(model, model.document, chunk=16, mc=4000, mask_token_id=MASK,
                                 generator=torch.Generator().manual_seed(2), batch_size=4000)
    expected = -prob[8:].log().mean().item()  # E over k and the k-subset = mean over the chunk
    assert losses.mean().item() == pytest.approx(expected, abs=4 * losses.std().item() / 63)


def test_ppl_curve_is_the_running_geometric_mean():
    chunk_probs = torch.tensor([0.9, 0.5, 0.25, 0.1])
    model = known_model(32, chunk_probs.repeat_interleave(8))
    curve = ppl_curve({"fake": fixed_model(model)}, model.document.tolist(), mask_token_id=MASK,
                      chunk=8, mc=3)
    assert curve["context"].tolist() == [8, 16, 24]  # chunk 0 has no context and is not scored
    assert curve["chunk_ppl"].tolist() == pytest.approx((1 / chunk_probs[1:]).tolist())
    running = [math.exp(-chunk_probs[1:i + 1].log().mean().item()) for i in range(1, 4)]
    assert curve["value"].tolist() == pytest.approx(running)


def test_ppl_at_lengths_scores_the_last_chunk_of_each_window():
    prob = torch.cat([torch.full((24,), 0.5), torch.full((8,), 0.2)])
    model = known_model(32, prob)
    documents = [model.document.tolist()] * 3
    table = ppl_at_lengths({"fake": fixed_model(model)}, documents, [16, 32], mask_token_id=MASK,
                           eod_token_id=EOD, chunk=8, mc=2, max_windows=2, elbo=False)
    assert set(table.columns) >= {"method", "model", "rope", "length", "value", "mc", "seed"}
    assert len(table) == 4 and set(table["window"]) == {0, 1}
    assert table.groupby("length")["value"].first().to_dict() == pytest.approx({16: 2.0, 32: 5.0})
    with pytest.raises(ValueError, match="above the chunk size"):
        ppl_at_lengths({"fake": fixed_model(model)}, documents, [8], mask_token_id=MASK,
                       eod_token_id=EOD, chunk=8)


def test_paired_summary_standard_errors():
    values = {"ref": [1.0, 2.0, 4.0], "other": [1.1, 2.2, 4.3]}
    frame = pd.DataFrame([
        {"method": "diffusion_loss", "model": model, "rope": model, "length": 64, "window": w,
         "value": value, "mc": 2, "seed": 0}
        for model, column in values.items() for w, value in enumerate(column)])
    summary = paired_summary(frame, reference="ref").set_index("model")
    assert summary.loc["ref", "value"] == pytest.approx(7 / 3)
    assert summary.loc["ref", "se"] == pytest.approx((7 / 3) ** 0.5 / 3**0.5)  # sd(1, 2, 4)
    assert summary.loc["ref", "delta"] == 0.0
    assert summary.loc["other", "delta"] == pytest.approx(0.2)
    assert summary.loc["other", "delta_se"] == pytest.approx(0.1 / 3**0.5)  # sd(.1,.2,.3) = .1
    with pytest.raises(ValueError, match="reference 'nope'"):
        paired_summary(frame, reference="nope")


class RecordingModel(torch.nn.Module):
    """Logits that depend on the input (so losses differ between models) and a record of inputs."""

    def __init__(self, vocab: int = 16, scale: float = 1.0):
        super().__init__()
        self.vocab, self.scale, self.inputs = vocab, scale, []

    def forward(self, input_ids, positions=None, doc_ids=None):
        self.inputs.append(input_ids.clone())
        table = torch.sin(torch.arange(self.vocab * self.vocab, dtype=torch.float32))
        return SimpleNamespace(logits=self.scale * table.view(self.vocab, self.vocab)[input_ids])


def test_paired_loss_grid_feeds_every_model_the_same_masks():
    models = {"a": RecordingModel(scale=1.0), "b": RecordingModel(scale=3.0)}
    documents = [torch.randint(1, 16, (40,), generator=torch.Generator().manual_seed(i)).tolist()
                 for i in range(3)]
    table = paired_loss_grid({k: fixed_model(m) for k, m in models.items()}, documents, [16, 32],
                             mask_token_id=MASK, eod_token_id=EOD, mc=4, max_windows=3,
                             batch_size=5)
    assert len(table) == 2 * 2 * 3
    inputs_a, inputs_b = torch.cat(models["a"].inputs[:3]), torch.cat(models["b"].inputs[:3])
    assert torch.equal(inputs_a, inputs_b) and (inputs_a == MASK).any()
    assert table.groupby("model")["value"].apply(list).map(len).tolist() == [6, 6]
    assert not table[table.model == "a"]["value"].equals(table[table.model == "b"]["value"])
    # Seeded: the same call gives the same numbers.
    again = paired_loss_grid({"a": fixed_model(RecordingModel())}, documents, [16, 32],
                             mask_token_id=MASK, eod_token_id=EOD, mc=4, max_windows=3)
    assert again["value"].tolist() == table[table.model == "a"]["value"].tolist()


# ------------------------------------------------------------------------------------ retrieval

DIGITS = tuple(range(1, 11))  # token ids of "0".."9" in the fake vocabulary
QUESTION = 15


def fake_sample(task: str, length: int, depth: float, seed: int) -> SimpleNamespace:
    """A prompt of `length` tokens: filler (11-14) holding a 3-digit needle at `depth` percent,
    then the question token QUESTION."""
    generator = torch.Generator().manual_seed(seed)
    answer = [DIGITS[i] for i in torch.randint(0, 10, (3,), generator=generator).tolist()]
    if length < 8:
        raise ValueError(f"length {length} cannot hold the needle and question")
    filler = torch.randint(11, 15, (length - 4,), generator=generator).tolist()
    start = round(depth / 100 * (length - 4))
    prompt = [*filler[:start], *answer, *filler[start:], QUESTION]
    return SimpleNamespace(prompt_ids=prompt, answer_ids=answer,
                           answer_text="".join(str(t - 1) for t in answer), length=length,
                           depth=depth, metadata={"needle_end": start + 3})


def decode(ids):
    return "".join(str(t - 1) if t in DIGITS else "_" for t in ids)


class Retriever(torch.nn.Module):
    """Predicts the needle digits when the needle sits within `reach` tokens of the prompt's end
    (a caricature of local perception), and the filler token otherwise."""

    def __init__(self, reach: int, fail_after: int | None = None, vocab: int = 16):
        super().__init__()
        self.reach, self.fail_after, self.vocab, self.calls = reach, fail_after, vocab, 0

    def forward(self, input_ids, positions=None, doc_ids=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        batch, length = input_ids.shape
        logits = torch.zeros(batch, length, self.vocab)
        for b in range(batch):
            ids = input_ids[b].tolist()
            prompt_end = ids.index(QUESTION) + 1
            digits = [i for i, t in enumerate(ids[:prompt_end]) if t in DIGITS]
            near = digits and prompt_end - (digits[-1] + 1) <= self.reach
            for offset in range(length - prompt_end):
                target = ids[digits[0] + offset % 3] if near else 11
                logits[b, prompt_end + offset, target] = 5.0
        return SimpleNamespace(logits=logits)


GRID = dict(tasks=["niah"], lengths=[16, 32], depths=[0, 50, 100], repeats=2,
            settings=GenerationSettings(4, 4, 2), mask_token_id=MASK, batch_size=4)


def test_retrieval_grid_scores_and_resumes_to_the_same_table(tmp_path):
    models = {"local": fixed_model(Retriever(reach=8))}
    clean = run_retrieval_grid(models, fake_sample, decode, results_path=tmp_path / "clean.jsonl",
                               **GRID)
    assert len(clean) == 2 * 3 * 2
    near = clean["needle_distance"] <= 8
    assert (clean[near]["value"] == 100).all() and (clean[near]["exact"] == 1).all()
    assert (clean[~near]["value"] < 100).all() and (clean[~near]["exact"] == 0).all()

    # Each row's prompt is drawn again from its cell and seed, after a round trip through CSV.
    clean.to_csv(tmp_path / "clean.csv", index=False)
    for row in pd.read_csv(tmp_path / "clean.csv", dtype={"answer": str}).to_dict("records"):
        cell = (row["task"], row["length"], row["depth"], row["repeat"])
        sample = retrieval.cell_sample(fake_sample, cell, row["seed"])
        assert (sample.answer_text, len(sample.prompt_ids)) == (row["answer"],
                                                                  row["prompt_tokens"])

    path = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_retrieval_grid({"local": fixed_model(Retriever(8, fail_after=3))}, fake_sample,
                           decode, results_path=path, **GRID)
    assert 0 < len(ResultLog(path, retrieval.RETRIEVAL_KEY).rows) < len(clean)
    resumed = run_retrieval_grid(models, fake_sample, decode, results_path=path, **GRID)
    pd.testing.assert_frame_equal(resumed.sort_values(list(retrieval.RETRIEVAL_KEY)).reset_index(
        drop=True), clean.sort_values(list(retrieval.RETRIEVAL_KEY)).reset_index(drop=True))

    idle = Retriever(8)
    run_retrieval_grid({"local": fixed_model(idle)}, fake_sample, decode, results_path=path,
                       **GRID)
    assert idle.calls == 0  # a finished grid runs nothing
    with pytest.raises(ValueError, match="other sampler settings"):
        run_retrieval_grid(models, fake_sample, decode, results_path=path,
                           **dict(GRID, settings=GenerationSettings(8, 8, 4)))


def test_local_perception_by_needle_distance(tmp_path):
    table = run_retrieval_grid({"local": fixed_model(Retriever(reach=8))}, fake_sample, decode,
                               results_path=tmp_path / "grid.jsonl", **GRID)
    binned = by_needle_distance(table, bin_width=9)
    assert binned.set_index("distance")["value"][0] == 100.0  # distances 0..8 all retrieved
    assert (binned.set_index("distance")["value"].drop(0) < 100).all()
    assert binned["n"].sum() == len(table)
    with pytest.raises(ValueError, match="bin_width"):
        by_needle_distance(table, bin_width=0)


def test_likelihood_scoring_prefers_the_retrieved_answer(tmp_path):
    scoring = LikelihoodScoring(alphabet=DIGITS, n_distractors=4, mc=4)
    table = run_retrieval_grid({"local": fixed_model(Retriever(reach=8))}, fake_sample, decode,
                               results_path=tmp_path / "grid.jsonl", likelihood=scoring,
                               **dict(GRID, depths=[100]))
    scored = table[table["method"] == "likelihood"]
    assert len(scored) == 4 and (scored["value"] == 100).all() and (scored["margin"] > 0).all()
    sample = fake_sample("niah", 16, 50, 0)
    answer = list(sample.answer_ids)
    distractors = scoring.distractors(sample, torch.Generator().manual_seed(0))
    assert len({tuple(d) for d in distractors}) == 4 and answer not in distractors
    assert all(len(d) == 3 and set(d) <= set(DIGITS) for d in distractors)


def test_likelihood_over_needles_compares_the_other_needles_keys():
    sample = fake_sample("multikey", 16, 50, 0)
    sample.task = "multikey"
    keys = [list(sample.answer_ids), [2, 2, 2], [3, 4, 5], [6, 7, 8]]
    sample.metadata["key_ids"] = keys
    scoring = LikelihoodScoring(needles=True, mc=4)
    assert scoring.distractors(sample, torch.Generator()) == keys[1:]  # chance 1 / 4
    del sample.metadata["key_ids"]
    with pytest.raises(ValueError, match="several needles' keys"):
        scoring.distractors(sample, torch.Generator())


def test_copier_chance_is_the_share_of_the_answers_tokens_among_the_prompts_keys():
    keys = frozenset(range(40, 50))
    one = SimpleNamespace(prompt_ids=[1, 41, 2, 3], answer_ids=[41])
    assert copier_chance(one, [keys]) == 100.0  # one needle: a copier cannot miss
    four = SimpleNamespace(prompt_ids=[41, 1, 42, 43, 2, 44, 41], answer_ids=[41])
    assert copier_chance(four, [keys]) == pytest.approx(100 * 2 / 5)
    two_slots = SimpleNamespace(prompt_ids=[41, 7, 42, 8, 7], answer_ids=[41, 7])
    assert copier_chance(two_slots, [keys, frozenset({7, 8})]) == pytest.approx(
        100 * 1 / 2 * 2 / 3)  # slots drawn independently: the product
    assert copier_chance(SimpleNamespace(prompt_ids=[1, 2], answer_ids=[41]), [keys]) == 0.0
    with pytest.raises(ValueError, match="2 key slots for an answer of 1 tokens"):
        copier_chance(one, [keys, keys])


def test_retrieval_grid_bad_input_fails_before_any_work(tmp_path):
    model = Retriever(8)
    run = dict(GRID, results_path=tmp_path / "grid.jsonl")
    for change, message in [({"depths": [0, 120]}, r"depths are percentages in \[0, 100\]"),
                            ({"lengths": [4]}, "cannot hold the needle"),
                            ({"repeats": 0}, "repeats"),
                            ({"settings": GenerationSettings(2, 2, 1)}, "more than gen_length")]:
        with pytest.raises(ValueError, match=message):
            run_retrieval_grid({"m": fixed_model(model)}, fake_sample, decode,
                               **dict(run, **change))
    assert model.calls == 0 and not (tmp_path / "grid.jsonl").exists()
    fitted = run_retrieval_grid({"m": fixed_model(model)}, fake_sample, decode,
                                fit_gen_length=True, **dict(run, lengths=[16], depths=[100],
                                                            repeats=1))
    assert fitted["gen_length"].tolist() == [4]  # 3 answer tokens at 2 per step -> 4


# ------------------------------------------------------------------------------ leakage


def _tiny_llada(**overrides):
    from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    config = LLaDAConfig(vocab_size=50, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2,
                         mlp_hidden_size=64, max_sequence_length=16, **overrides)
    return LLaDAModelLM(config).eval()


def test_attention_probs_reproduce_the_blocks_attention():
    from minillada.modeling.attention import masked_attention

    model = _tiny_llada()
    block = model.model.transformer.blocks[0]
    x = torch.randn(2, 10, 32)
    cos, sin = model.model.rotary(torch.arange(10))
    q, k, v = block._qkv(x, cos, sin)
    expected = masked_attention(q, k, v, None)
    probs = block.attention_probs(x, cos, sin)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 10), atol=1e-6)
    assert torch.allclose(probs @ v.repeat_interleave(2, dim=1), expected, atol=1e-5)


def test_cross_document_share_is_closed_form_for_uniform_attention():
    model = _tiny_llada()
    for block in model.model.transformer.blocks:  # q = 0: every query spreads evenly over keys
        torch.nn.init.zeros_(block.q_proj.weight)
    a, b = 3, 9
    doc_ids = torch.tensor([[0] * a + [1] * b, [0] * 12])
    tokens = torch.randint(4, 50, (2, 12))
    positions = torch.arange(12).repeat(2, 1)
    table = leakage.cross_document_attention(model, tokens, positions, doc_ids)
    assert sorted(set(table["layer"])) == [0, 1]
    for layer in (0, 1):
        rows = table[table["layer"] == layer].sort_values("row")
        assert rows["value"].tolist() == pytest.approx([2 * a * b / 12**2, 0.0], abs=1e-6)
        # Attention blind to boundaries crosses exactly as much as a uniform spread would.
        assert rows["uniform"].tolist() == pytest.approx([2 * a * b / 12**2, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match=r"must all be the same \[B, L\]"):
        leakage.cross_document_attention(model, tokens, positions[:, :5], doc_ids)


def test_rope_variants_are_distinct_objects_each_with_its_own_rope():
    model = _tiny_llada()
    variants = rope_variants(model, ["default", "ntk", "diffusion_ntk"])
    ids = torch.randint(4, 50, (1, 64))
    default, ntk, diffusion = (variants[v](64) for v in ("default", "ntk", "diffusion_ntk"))
    assert len({id(default), id(ntk), id(diffusion)}) == 3  # never one object under two names
    assert (ntk.rope_variant, ntk.rope_target_len) == ("ntk", 64)
    assert (default.rope_variant, default.rope_target_len) == ("default", None)
    # Each set up alone on fresh copies of the weights: the reference logits.
    expected = {}
    for variant, target in (("default", None), ("ntk", 64), ("diffusion_ntk", 64)):
        fresh = _tiny_llada()
        fresh.set_rope(variant, target_len=target)
        expected[variant] = fresh(ids).logits
    # Interleaved use of the shared weights: each call runs its own variant.
    for wrapped, variant in ((ntk, "ntk"), (default, "default"), (diffusion, "diffusion_ntk"),
                             (ntk, "ntk"), (default, "default")):
        torch.testing.assert_close(wrapped(ids).logits, expected[variant])
    assert not torch.allclose(expected["default"], expected["ntk"])
    # Columns name each variant's own RoPE, whichever ran last.
    assert rope_columns(ntk, "x") == {"model": "x", "rope": "ntk", "rope_target_len": 64}
    assert model_device(ntk) == torch.device("cpu")


@pytest.mark.parametrize(("task", "digits", "expected"), [
    ("passkey", 1, 10.0), ("passkey", 5, 1e-3), ("niah", 2, 1.0), ("niah_multikey", 3, 0.1),
])
def test_chance_level_of_exact_match_is_ten_to_the_minus_k(task, digits, expected):
    assert chance_level(task, digits) == pytest.approx(expected)


def test_chance_level_of_likelihood_scoring_and_bad_input():
    assert chance_level("passkey", 5, metric="likelihood", n_distractors=9) == pytest.approx(10.0)
    assert 0 < chance_level("variable_tracking", 5) < 1e-30
    with pytest.raises(ValueError, match="unknown metric"):
        chance_level("passkey", 1, metric="value")
    with pytest.raises(ValueError, match="no chance level for task 'sudoku'"):
        chance_level("sudoku", 1)


def test_a_laid_out_model_is_named_by_its_own_rope_setting(tmp_path):
    """The layout wraps the model per prompt; the rows still name the RoPE of the model inside
    (not the label) and score what the bare model scores."""
    from minillada.evals.layout import LaidOutModel, Layout

    inner = Retriever(reach=8)
    inner.config = SimpleNamespace(rope_variant="diffusion_ntk", rope_target_len=64)
    laid = LaidOutModel(inner, Layout(), EOD)
    table = run_retrieval_grid({"ultra": lambda length: laid}, fake_sample, decode,
                               results_path=tmp_path / "laid.jsonl", **GRID)
    bare = run_retrieval_grid({"ultra": fixed_model(Retriever(reach=8))}, fake_sample, decode,
                              results_path=tmp_path / "bare.jsonl", **GRID)
    assert set(table["rope"]) == {"diffusion_ntk"} and set(table["rope_target_len"]) == {64}
    assert table["exact"].tolist() == bare["exact"].tolist()


class CountingRetriever(Retriever):
    """A Retriever that records how many rows each forward pass is given."""

    def __init__(self, reach: int):
        super().__init__(reach)
        self.rows: list[int] = []

    def forward(self, input_ids, positions=None, doc_ids=None):
        self.rows.append(len(input_ids))
        return super().forward(input_ids, positions, doc_ids)


def test_likelihood_scoring_runs_through_a_layout_in_batches_of_batch_size(tmp_path):
    """--likelihood on a laid-out model: scored like the bare model, `batch_size` rows per pass
    (the masks are drawn before batching, so the batch size cannot change a margin)."""
    from minillada.evals.layout import LaidOutModel, Layout

    scoring = LikelihoodScoring(alphabet=DIGITS, n_distractors=2, mc=6)
    grid = dict(GRID, depths=[100], lengths=[16], repeats=1)
    generating = CountingRetriever(reach=8)
    run_retrieval_grid({"m": fixed_model(generating)}, fake_sample, decode,
                       results_path=tmp_path / "generate.jsonl", **grid)
    tables = {}
    for name, batch_size, wrap in (("laid", 4, True), ("bare", 8, False)):
        model = CountingRetriever(reach=8)
        wrapped = LaidOutModel(model, Layout(), EOD) if wrap else model
        tables[name] = run_retrieval_grid(
            {"m": lambda length, w=wrapped: w}, fake_sample, decode, likelihood=scoring,
            results_path=tmp_path / f"{name}.jsonl", **dict(grid, batch_size=batch_size))
        likelihood_passes = model.rows[len(generating.rows):]  # after the sampler's passes
        assert max(likelihood_passes) == min(batch_size, scoring.mc)  # one candidate a call
        assert sum(likelihood_passes) == 3 * scoring.mc
    laid, bare = (t[t["method"] == "likelihood"] for t in tables.values())
    assert laid["margin"].tolist() == pytest.approx(bare["margin"].tolist())
    assert (laid["value"] == 100).all()
