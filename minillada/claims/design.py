"""What a study runs: the post-training arms and the experimental designs that cross them with
base and post-training seeds (`DESIGNS`: `smoke`, `cpu`, `cpu-seeds`, `cpu-gated`, `gpu`).

The unit of replication is the training run. A design names its training preset (the scale,
`training.presets`), the seeds of its pre-trained bases, the seeds of its post-training runs and
which (arm, base, seed) runs it trains, plus the seeds of its evaluation prompts: `eval_seed` for
the prompts that decide the claims and `selection_seed`, disjoint, for the prompts that pick the
best training-free variant. The committed results come from `cpu-seeds` (the confirmatory design
of 2026-12-04, docs/science.md). The gated design `cpu-gated` that supersedes it (pre-registered
in docs/science.md, "The gated design") studies only bases that pass the instrument gate
(`claims.gate`); its runs are in progress. `cpu`, the default reproduction, is its first
candidate base with its post-training seed and prompts, and trains the gated recipe. This module
imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillada.training.presets import Preset, get_preset


@dataclass(frozen=True)
class Arm:
    """A post-training recipe: the preset's extend stage with a RoPE variant, a packing and
    TrainConfig `overrides`; `short_retrieval` keeps retrieval documents within T_train (the
    preset's `short_task_lengths`)."""

    name: str
    label: str
    rope: str = "diffusion_ntk"
    packing: str = "adaptive"
    overrides: dict[str, Any] = field(default_factory=dict)
    short_retrieval: bool = False

    def train_overrides(self, preset: Preset) -> dict[str, Any]:
        """The TrainConfig fields of this arm at `preset` (over its extend stage)."""
        fields: dict[str, Any] = {"rope": self.rope, "packing": self.packing, **self.overrides}
        if self.short_retrieval:
            fields["task_lengths"] = preset.short_task_lengths
        return fields


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    # mini-UltraLLaDA: diffusion-aware NTK, block-diagonal attention (adaptive masking)
    Arm("adaptive", "mini-UltraLLaDA (adaptive)"),
    # the paper's concatenations: full attention, positions continuous over the packed row
    Arm("direct", "direct concatenation", packing="direct"),
    Arm("eod", "EOD concatenation", packing="eod"),
    # the same with positions restarting at every document (a factor the paper leaves open)
    Arm("direct_restart", "direct, positions restart", packing="direct",
        overrides={"restart_positions": True}),
    Arm("eod_restart", "EOD, positions restart", packing="eod",
        overrides={"restart_positions": True}),
    # matched comparators of the headline: what the RoPE law and the long rows each add
    Arm("default_rope", "post-trained, RoPE unchanged", rope="default"),
    Arm("short_retrieval", "post-trained, retrieval within T_train", short_retrieval=True),
    # the paper's own post-training data: natural text only, no retrieval rows, each packing
    Arm("natural_adaptive", "natural text only (adaptive)", overrides={"task_fraction": 0.0}),
    Arm("natural_direct", "natural text only, direct", packing="direct",
        overrides={"task_fraction": 0.0}),
    Arm("natural_eod", "natural text only, EOD", packing="eod",
        overrides={"task_fraction": 0.0}),
    # the packing claim's control: one retrieval document per row, so that no neighbouring
    # document asks the same question with another answer
    Arm("single_adaptive", "one retrieval document per row (adaptive)",
        overrides={"task_distractors": False}),
    Arm("single_direct", "one retrieval document per row, direct", packing="direct",
        overrides={"task_distractors": False}),
)}


@dataclass(frozen=True)
class Run:
    """One post-training run of a design: `arm` on the base pre-trained with seed `base`,
    post-trained with seed `seed`."""

    arm: str
    base: int
    seed: int


def cross(arms: tuple[str, ...], bases: tuple[int, ...], seeds: tuple[int, ...]) -> tuple[Run, ...]:
    """Every (arm, base, seed), bases outermost."""
    return tuple(Run(arm, base, seed) for base in bases for seed in seeds for arm in arms)


@dataclass(frozen=True)
class Design:
    """A study: the training `preset`, base seeds, post-training `runs` (in training order),
    the evaluation prompt seeds, and the sample sizes of its measurements.

    A design with `gated` > 0 pre-registers `bases` as candidates, in order, and studies the
    first `gated` of them that pass the instrument gate (`claims.gate`) on the machine that
    trains them (`Study.bases`); its `runs` name every candidate, and only the runs of studied
    bases are trained. With `gated` 0 every base is studied, gated or not."""

    name: str
    preset_name: str
    bases: tuple[int, ...]
    runs: tuple[Run, ...]
    eval_seed: int
    selection_seed: int
    loss_windows: int  # held-out windows per length and base for the training-free loss claim
    loss_bases: int  # the first bases on which the loss claim is measured
    selection_samples: int  # validation prompts per training-free variant
    description: str = ""
    gated: int = 0  # > 0: the study takes the first `gated` bases that pass the gate

    def __post_init__(self) -> None:
        unknown = sorted({run.arm for run in self.runs} - set(ARMS))
        if unknown:
            raise ValueError(f"design {self.name!r}: unknown arm(s) {unknown}; known: "
                             f"{', '.join(ARMS)}")
        strays = sorted({run.base for run in self.runs} - set(self.bases))
        if strays:
            raise ValueError(f"design {self.name!r}: runs on bases {strays} not in {self.bases}")
        studied = self.gated or len(self.bases)
        if not 0 <= self.gated <= len(self.bases):
            raise ValueError(f"design {self.name!r}: gated {self.gated} must lie in "
                             f"[0, {len(self.bases)}]")
        if not 1 <= self.loss_bases <= studied:
            raise ValueError(f"design {self.name!r}: loss_bases {self.loss_bases} must lie in "
                             f"[1, {studied}]")
        if self.eval_seed == self.selection_seed:
            raise ValueError(f"design {self.name!r}: eval_seed and selection_seed must differ")

    @property
    def preset(self) -> Preset:
        return get_preset(self.preset_name)

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms this design trains, in registry order."""
        return tuple(arm for arm in ARMS if any(run.arm == arm for run in self.runs))

    def runs_of(self, arm: str) -> tuple[Run, ...]:
        return tuple(run for run in self.runs if run.arm == arm)

    def bases_of(self, arm: str) -> tuple[int, ...]:
        return tuple(dict.fromkeys(run.base for run in self.runs_of(arm)))


# The RoPE variants applied without training (notebook 03: UltraLLaDA's and LongLLaDA's
# baselines), from which each base's best training-free baseline is chosen.
TRAINING_FREE = ("default", "linear", "ntk", "dynamic", "yarn", "ntk_critical", "diffusion_ntk",
                 "diffusion_yarn")
PACKING_ARMS = ("adaptive", "direct", "eod")
RESTART_ARMS = ("direct_restart", "eod_restart")
COMPARATOR_ARMS = ("default_rope", "short_retrieval")
NATURAL_ARMS = ("natural_adaptive", "natural_direct", "natural_eod")
SINGLE_ARMS = ("single_adaptive", "single_direct")
# The arms of the gated design, on every base it studies.
GATED_ARMS = PACKING_ARMS + COMPARATOR_ARMS + NATURAL_ARMS + SINGLE_ARMS
# The pre-registered candidate bases of the gated design, in the order they are tried
# (docs/science.md, "The gated design"): 101-110, then 111-115 should fewer than five pass.
GATE_CANDIDATES = tuple(range(101, 116))

DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("smoke", "smoke", bases=(1, 2),
           runs=cross(PACKING_ARMS, (1, 2), (1,)) + cross(RESTART_ARMS + COMPARATOR_ARMS, (1,),
                                                           (1,)),
           eval_seed=31, selection_seed=41, loss_windows=4, loss_bases=2, selection_samples=6,
           description="every code path in minutes: two bases, every arm"),
    Design("cpu", "cpu", bases=(101,),
           runs=cross(PACKING_ARMS + COMPARATOR_ARMS, (101,), (23,)),
           eval_seed=33, selection_seed=43, loss_windows=32, loss_bases=1, selection_samples=40,
           description="one base and one seed per arm: the first candidate of cpu-gated"),
    Design("cpu-seeds", "cpu", bases=(11, 12, 13, 14, 15),
           runs=(cross(PACKING_ARMS, (11, 12, 13, 14, 15), (21,))
                 + cross(COMPARATOR_ARMS, (11, 12, 13), (21,))
                 + cross(RESTART_ARMS, (11, 12, 13), (21,))
                 + cross(PACKING_ARMS, (11, 12), (22,))),
           eval_seed=31, selection_seed=41, loss_windows=64, loss_bases=3, selection_samples=40,
           description="the confirmatory multi-seed study of 2026-12-04 (docs/science.md; "
           "superseded by cpu-gated)"),
    Design("cpu-gated", "cpu", bases=GATE_CANDIDATES,
           runs=cross(GATED_ARMS, GATE_CANDIDATES, (23,)),
           eval_seed=33, selection_seed=43, loss_windows=64, loss_bases=5, selection_samples=40,
           gated=5, description="the gated confirmatory study (docs/science.md): the first "
           "five of bases 101-115 that pass the gate, every arm on each (in progress)"),
    Design("gpu", "gpu", bases=(11, 12, 13),
           runs=cross(PACKING_ARMS + COMPARATOR_ARMS + RESTART_ARMS, (11, 12, 13), (21,)),
           eval_seed=31, selection_seed=41, loss_windows=64, loss_bases=3, selection_samples=100,
           description="the cpu design at the gpu scale (untested on a GPU)"),
)}

# The design whose figures and results the repository commits (into figures/ and results/): the
# 2026-12-04 study until the gated study's runs are complete.
COMMITTED_DESIGN = "cpu-seeds"


def get_design(name: str) -> Design:
    """The design called `name`; ValueError listing the known ones."""
    if name not in DESIGNS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(DESIGNS)}")
    return DESIGNS[name]


def preset_folder(folder: str | os.PathLike, preset: str) -> Path:
    """Where a notebook at design `preset` writes figures or results: `folder` for the committed
    design, else `folder/<preset>` (kept as is when it already ends with that name, as the
    folders of `minillada reproduce` do), so a smoke run never overwrites the committed study."""
    folder = Path(folder)
    return folder if preset == COMMITTED_DESIGN or folder.name == preset else folder / preset
