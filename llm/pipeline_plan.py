"""The TOFU pipeline's plan: scale presets (cpu, gpu, paper), their recipes, and the runs they expand to.

``PRESETS[name]`` holds everything a pipeline run depends on besides the data and the code;
``plan_runs(preset)`` lists its (task, method, seed, RT weight) unlearning runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PipelineError", "Recipe", "Preset", "PRESETS", "METHODS", "TASKS", "LARGE_RT", "RunSpec",
           "plan_runs", "steps_per_epoch"]

#: Display name -> llm.losses method key.
METHODS = {"GA": "ga", "GA+RT": "ga_rt", "GA+KL": "ga_kl", "IDK+RT": "idk_rt", "DPO+RT": "dpo_rt",
           "KTO+RT": "kto_rt", "NPO": "npo", "NPO+RT": "npo_rt", "NPO+KL": "npo_kl"}
TASKS = ("forget01", "forget05", "forget10", "forget20", "forget30", "forget50", "forget90")
#: The paper's RT weights for NPO+RT on the largest forget sets (Fig. 8).
LARGE_RT = {"forget50": 5.0, "forget90": 12.0}


class PipelineError(ValueError):
    """A user-fixable pipeline problem: one line naming the fix."""


@dataclass
class Recipe:
    """One training recipe (llm.train.TrainConfig fields)."""
    epochs: int
    lr: float
    effective_batch: int
    batch_size: int
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01


@dataclass
class Preset:
    model: str
    finetune: Recipe
    unlearn: Recipe
    tasks: tuple = ("forget01", "forget05", "forget10")
    methods: tuple = tuple(METHODS)
    seeds: tuple = (0,)
    qa_per_author: int = 20          # < 20: the consistent subset of llm/pipeline_data.py
    ds_size: int | None = None       # eval items per set (None: all, as open-unlearning)
    eval_batch: int = 32
    max_new_tokens: int = 200
    n_samples: int = 2               # sample answers stored per set and evaluation
    sample_tokens: int = 48
    kl_items: int = 100
    rt_ablation: tuple = (2.0, 5.0)  # extra NPO+RT RT weights on forget10 (Fig. 11)
    large_rt: dict = field(default_factory=lambda: dict(LARGE_RT))
    beta: float = 0.1
    template: str = "llama2"
    seed: int = 42                   # initialisation / data order of the fine-tunes
    precision: str = "auto"
    gradient_checkpointing: bool = False
    world_knowledge: int = 0         # real-author / world-fact QA pairs of each learned when
                                     # fine-tuning (from-scratch models; pipeline_data.py)
    threads: int | None = None       # torch CPU threads (1 avoids oversubscription on shared cores)
    #: per-task method lists overriding ``methods`` (an empty tuple: only the extra RT-weight runs)
    task_methods: dict = field(default_factory=dict)
    #: per-task retain split used as Forget Quality's reference (default: the task's complement).
    #: Any retain split disjoint from the forget set is a model that never saw it; sharing one
    #: across tasks saves fine-tunes at small scale.
    retain_for: dict = field(default_factory=dict)

    def methods_for(self, task: str) -> tuple:
        return tuple(self.task_methods.get(task, self.methods))

    def retain_split(self, task: str) -> str:
        return self.retain_for.get(task, f"retain{100 - int(task[len('forget'):]):02d}")


PRESETS = {
    # A ~1M-parameter Llama trained from scratch on 2 QA pairs per author (400 pairs) plus 20
    # real-author and 20 world-fact pairs: forget01 / 05 / 10 keep 2 / 10 / 20 authors (4 / 20 / 40
    # items) and batch 4 keeps the paper's 1 / 5 / 10 optimizer steps per epoch. Evaluation on the
    # first 20 items per set. Cut to fit minutes on 2 shared cores: one seed; 4 methods on
    # forget01/05, all 9 on forget10, NPO+RT only on forget50/90; retain90 is the reference model
    # of forget01/05/10 and retain10 of forget50/90. Unlearning lr 3e-4: at 1e-4 GA did not
    # collapse on forget05 within 10 epochs (it did on forget10 at epoch 8); at 3e-4 it collapses
    # on forget10 at epoch 3 (measured on this preset's target model).
    "cpu": Preset(model="tiny", finetune=Recipe(epochs=15, lr=3e-3, effective_batch=16, batch_size=16),
                  unlearn=Recipe(epochs=10, lr=3e-4, effective_batch=4, batch_size=4),
                  tasks=("forget01", "forget05", "forget10", "forget50", "forget90"),
                  task_methods={"forget01": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget05": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget50": ("NPO+RT",), "forget90": ()},
                  qa_per_author=2, ds_size=20, max_new_tokens=40, sample_tokens=32, kl_items=20,
                  world_knowledge=20, threads=1,
                  retain_for={"forget01": "retain90", "forget05": "retain90", "forget50": "retain10"}),
    # A ~34M-parameter Llama from scratch on all of TOFU (+ every real-author / world-fact pair),
    # sized for one H100 in minutes: batch 32 as in the paper for unlearning, legacy TOFU's
    # 300-item evaluation, 128 new tokens (TOFU answers are shorter). Not yet calibrated on a GPU.
    "gpu": Preset(model="gpu", finetune=Recipe(epochs=25, lr=1e-3, effective_batch=64, batch_size=64),
                  unlearn=Recipe(epochs=10, lr=1e-4, effective_batch=32, batch_size=32),
                  tasks=("forget01", "forget05", "forget10"), ds_size=300, eval_batch=512,
                  max_new_tokens=128, world_knowledge=117),
    # The paper's recipe for a user model (--model PATH, e.g. Llama-2-7b-chat): lr 1e-5, batch 32,
    # 5 fine-tuning and 10 unlearning epochs, every task, 5 seeds.
    "paper": Preset(model="", finetune=Recipe(epochs=5, lr=1e-5, effective_batch=32, batch_size=4),
                    unlearn=Recipe(epochs=10, lr=1e-5, effective_batch=32, batch_size=4),
                    tasks=TASKS, seeds=(0, 1, 2, 3, 4), rt_ablation=(0.5, 2.0, 5.0),
                    gradient_checkpointing=True),
}


# ---- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str
    seed: int
    retain_weight: float
    tag: str = ""

    @property
    def rt_weight(self) -> float:
        return self.retain_weight if self.method.endswith("+RT") else 0.0

    @property
    def id(self) -> str:
        slug = self.method.lower().replace("+", "_")
        return f"{self.task}-{slug}-rt{self.retain_weight:g}-s{self.seed}"


def plan_runs(p: Preset, extras: bool = True) -> list[RunSpec]:
    """Main grid (every task x method x seed, retain weight 1) plus, with ``extras``, NPO+RT at the
    paper's large RT weights (forget50: 5, forget90: 12) and the forget10 RT-weight ablation."""
    runs = [RunSpec(t, m, s, 1.0) for t in p.tasks for m in p.methods_for(t) for s in p.seeds]
    if extras:
        for t in p.tasks:
            if t in p.large_rt:
                runs += [RunSpec(t, "NPO+RT", s, p.large_rt[t], "rt_weight") for s in p.seeds]
        if "forget10" in p.tasks:
            runs += [RunSpec("forget10", "NPO+RT", s, w, "rt_weight")
                     for w in p.rt_ablation if w != 1.0 for s in p.seeds]
    seen, out = set(), []
    for r in runs:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def steps_per_epoch(n: int, recipe: Recipe) -> int:
    """As llm.train plans it: total = epochs * n // batch, per epoch = total // epochs."""
    return max(1, (recipe.epochs * n // recipe.effective_batch) // recipe.epochs)
