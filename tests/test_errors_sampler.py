"""The sampler never commits the mask token, and names bad arguments."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from minillada.modeling.diffusion import generate

MASK = 3
VOCAB = 7


class TableModel:
    """Context-free logits `table[i]` at position i; counts its forward passes."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.calls = table, 0

    def __call__(self, input_ids, positions=None, doc_ids=None):
        self.calls += 1
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.table[:length].expand(batch, length, -1))


def mask_favoured_table(length: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Random logits whose largest entry at every position is the mask token's."""
    table = torch.randn(length, VOCAB, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    table[:, MASK] = table.max(dim=-1).values + 5.0
    return table


@pytest.mark.parametrize(
    ("kwargs", "dtype"),
    [
        ({}, torch.float32),
        ({}, torch.float64),
        ({"gen_length": 8, "block_length": 4, "steps": 8}, torch.float32),
        ({"remasking": "random"}, torch.float32),
        ({"temperature": 1.0}, torch.float32),
        ({"temperature": 0.3, "remasking": "random"}, torch.float64),
        ({"cfg_scale": 1.0}, torch.float32),
    ],
)
def test_the_mask_token_is_never_committed_and_output_is_deterministic(kwargs, dtype):
    prompt = torch.tensor([[1, 2], [4, 5]])
    settings = {"gen_length": 6, "block_length": 6, "steps": 3} | kwargs
    table = mask_favoured_table(2 + settings["gen_length"], dtype=dtype)
    before = table.clone()
    runs = [
        generate(TableModel(table), prompt, mask_token_id=MASK,
                 generator=torch.Generator().manual_seed(0), **settings)
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(*runs)
    assert not (runs[0][:, 2:] == MASK).any()
    assert torch.equal(table, before)  # the model's logits are not modified in place
    if settings.get("temperature", 0) == 0 and settings.get("cfg_scale", 0) == 0:
        best_other = table[2:].clone()
        best_other[:, MASK] = -math.inf
        assert torch.equal(runs[0][:, 2:], best_other.argmax(dim=-1).expand(2, -1))


def test_confidence_is_the_models_probability_of_the_chosen_token():
    """A position whose mass sits on the mask is less sure of its best real token: it goes later,
    although renormalised without the mask it would be the surer one (0.97 against 0.77)."""
    table = torch.zeros(3, VOCAB)
    table[1, 1], table[1, MASK] = 5.0, 9.0  # p(1) = 0.018: most mass on the mask
    table[2, 2] = 3.0  # p(2) = 0.77
    inputs = []

    def model(input_ids, positions=None, doc_ids=None):
        inputs.append(input_ids.clone())
        return SimpleNamespace(logits=table.expand(1, 3, -1))

    out = generate(model, torch.tensor([[0]]), 2, 2, 2, mask_token_id=MASK)
    assert out.tolist() == [[0, 1, 2]]
    assert inputs[1].tolist() == [[0, MASK, 2]]  # position 2 was committed first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": math.inf}, r"temperature must be a finite number >= 0, got inf"),
        ({"temperature": math.nan}, r"temperature must be a finite number >= 0, got nan"),
        ({"temperature": -0.5}, r"temperature must be a finite number >= 0, got -0\.5"),
        ({"cfg_scale": math.nan}, r"cfg_scale must be a finite number >= 0, got nan"),
        ({"cfg_scale": -1.0}, r"cfg_scale must be a finite number >= 0, got -1\.0"),
        ({"mask_token_id": -1}, r"mask_token_id must be an integer >= 0, got -1"),
        ({"mask_token_id": 1.0}, r"mask_token_id must be an integer >= 0, got 1\.0"),
        ({"mask_token_id": True}, r"mask_token_id must be an integer >= 0, got True"),
    ],
)
def test_bad_sampler_arguments_are_named_before_any_forward_pass(kwargs, message):
    model = TableModel(mask_favoured_table(6))
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1, 2]]), 4, 4, 2, **({"mask_token_id": MASK} | kwargs))
    assert model.calls == 0


def test_a_mask_id_outside_the_vocabulary_is_named():
    model = TableModel(mask_favoured_table(6))
    with pytest.raises(ValueError, match=r"mask_token_id 7 is outside the model's vocabulary "
                                         r"\[0, 7\)"):
        generate(model, torch.tensor([[1, 2]]), 4, 4, 2, mask_token_id=VOCAB)


@pytest.mark.parametrize("bad", [-math.inf, math.nan])
def test_logits_with_nothing_but_the_mask_to_choose_are_refused(bad):
    table = torch.full((6, VOCAB), bad)
    table[:, MASK] = 1.0
    with pytest.raises(ValueError, match="no finite value outside the mask token"):
        generate(TableModel(table), torch.tensor([[1, 2]]), 4, 4, 2, mask_token_id=MASK)
