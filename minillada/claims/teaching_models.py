"""Write the models that ship with the package for teaching (`released.examples`) from a study's
finished runs: a base that passed the instrument gate and its mini-UltraLLaDA extension.

    from minillada.claims.teaching_models import ship
    ship("cpu-gated", base=101)   # runs/cpu/..., judged into results/cpu-gated/gate.csv

Each example's provenance names the run folder and its digest (`study.run_folder`: the recipe's
trajectory fields), the preset, stage, seeds, the recipe digest of the pre-training stage, the
CPU and precision it was trained in, and for the base the gate result it passed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from minillada.claims.design import Run
from minillada.claims.study import Study, machine_cpu, recipe_digest
from minillada.released.examples import EXAMPLES_DIR, write_example
from minillada.training.checkpoint import saved_config


def _provenance(run: Path, **extra: Any) -> dict[str, Any]:
    saved = saved_config(run)
    return {"run": run.name, "digest": run.name.rsplit("-", 1)[1], "preset": saved["preset"],
            "stage": saved["stage"], "seed": saved["seed"], "dtype": saved["dtype"],
            "steps": saved["steps"], "seq_len": saved["seq_len"], "rope": saved["rope"],
            "packing": saved["packing"], "corpus": saved["corpus"],
            "split_seed": saved["split_seed"], "tasks": saved["tasks"],
            "task_key_kind": saved["task_key_kind"], "task_key_digits": saved["task_key_digits"],
            **extra}


def ship(design: str, base: int, seed: int = 23, arm: str = "adaptive",
         runs_dir: str | os.PathLike = "runs", results_dir: str | os.PathLike = "results",
         folder: str | os.PathLike = EXAMPLES_DIR) -> dict[str, Path]:
    """Export base `base` of `design` as the example `base` and its `arm` run (post-training
    `seed`) as `ultra`, each trained and gated where not done. Refuses a base that fails the
    gate: the shipped base must be one the study itself would use."""
    study = Study.create(design, runs_dir, results_dir, Path(results_dir) / "figures")
    gate = study.judge_base(base)
    if not gate.passed:
        raise ValueError(f"base {base} fails the instrument gate ({gate.line()}); ship a base "
                         "that passes")
    common = {"design": design, "cpu": machine_cpu(), "recipe": recipe_digest(study.preset.name)}
    base_run, ultra_run = study.base(base), study.run(Run(arm, base, seed))
    gate_entry = {**dataclasses.asdict(gate), "line": gate.line()}
    return {
        "base": write_example(base_run / "model", "base",
                              _provenance(base_run, **common, gate=gate_entry), folder),
        "ultra": write_example(ultra_run / "model", "ultra",
                               _provenance(ultra_run, **common, arm=arm, base=base,
                                           base_digest=base_run.name.rsplit("-", 1)[1]),
                               folder)}
