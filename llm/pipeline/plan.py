"""The TOFU pipeline's plan: scale presets (cpu, smol, gpu, paper), their recipes, and the runs they expand to.

``PRESETS[name]`` holds everything a pipeline run depends on besides the data and the code;
``plan_runs(preset)`` lists its (task, method, seed, RT weight) unlearning runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PipelineError", "Recipe", "Preset", "PRESETS", "PAPER_GRID", "TASKS", "LARGE_RT", "RunSpec",
           "plan_runs", "steps_per_epoch"]

#: The paper's TOFU grid (Fig. 5), by method label (llm/train/methods/ registers every label with its
#: --method name), in the paper's order: the presets' default method list and the first entries of
#: the results' legends and tables (llm/studies/tofu_results.py). ``--methods`` takes any registered label.
PAPER_GRID = ("GA", "GA+RT", "GA+KL", "IDK+RT", "DPO+RT", "KTO+RT", "NPO", "NPO+RT", "NPO+KL")
TASKS = ("forget01", "forget05", "forget10", "forget20", "forget30", "forget50", "forget90")
#: The paper's RT weights for NPO+RT on the largest forget sets (Fig. 8).
LARGE_RT = {"forget50": 5.0, "forget90": 12.0}


class PipelineError(ValueError):
    """A user-fixable pipeline problem: one line naming the fix."""


@dataclass
class Recipe:
    """One training recipe (llm.train.loop.TrainConfig fields)."""
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
    methods: tuple = PAPER_GRID
    seeds: tuple = (0,)
    qa_per_author: int = 20          # < 20: the consistent subset of llm/pipeline/subset.py
    ds_size: int | None = None       # eval items per set (None: all, as open-unlearning)
    eval_batch: int = 32
    max_new_tokens: int = 200
    n_samples: int = 2               # sample answers stored per set and evaluation
    sample_tokens: int = 48
    kl_items: int = 100
    rt_ablation: tuple = (2.0, 5.0)  # extra NPO+RT RT weights on forget10 (Fig. 11)
    npo_betas: tuple = ()            # extra NPO runs at these betas on every task (tag "beta")
    #: extra runs of these methods on forget10 with gradient clipping off (tag "no_clip"): does the
    #: recipe's clip 1.0, which binds NPO's large early gradients, change which method lasts longer?
    clip_ablation: tuple = ()
    large_rt: dict = field(default_factory=lambda: dict(LARGE_RT))
    beta: float = 0.1
    template: str = "llama2"
    numerics: str = "exact"          # "ou": open-unlearning's float32 / 1e-10 guards (llm/evaluate/metrics.py)
    seed: int = 42                   # initialisation / data order of the fine-tunes
    precision: str = "auto"
    gradient_checkpointing: bool = False
    #: --hp NAME=VALUE: for the methods outside the paper's grid that declare NAME (e.g. RMU's layer
    #: on a 3-layer model); the grid's knobs are the recipe's and stay fixed
    hparams: dict = field(default_factory=dict)
    world_knowledge: int = 0         # real-author / world-fact QA pairs of each learned when
                                     # fine-tuning (from-scratch models; llm/pipeline/subset.py)
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
    # items) and batch 4 keeps the paper's 1 / 5 / 10 optimizer steps per epoch (forget20 / 30:
    # 80 / 120 items, 20 / 30 steps per epoch). Evaluation on the first 20 items per set (forget20/30
    # on forget10's perturbed set, the paper's proxy). Cut to fit 2 shared cores: one seed (--seeds N
    # for more); 4 methods on forget01/05, all 9 on forget10/20/30, NPO+RT only on forget50/90.
    # Forget Quality references: retain90 for forget01/05/10, retain70 for forget20/30 (disjoint
    # from both, as every retain split is the first authors; one fine-tune instead of retain80 +
    # retain70), retain10 for forget50/90. Unlearning lr 2e-4, by the rule in docs/results.md
    # (calibrated on GA alone): the lr of `python -m llm lr-sweep` at which GA's MU on forget10 first
    # falls below half its initial value at epoch 4-6 of 10 (epoch 4 at 2e-4; 7 at 1e-4, 3 at 3e-4;
    # results/tofu_cpu/lr_sweep.json).
    "cpu": Preset(model="tiny", finetune=Recipe(epochs=15, lr=3e-3, effective_batch=16, batch_size=16),
                  unlearn=Recipe(epochs=10, lr=2e-4, effective_batch=4, batch_size=4),
                  tasks=("forget01", "forget05", "forget10", "forget20", "forget30", "forget50",
                         "forget90"),
                  task_methods={"forget01": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget05": ("GA", "GA+RT", "NPO", "NPO+RT"),
                                "forget50": ("NPO+RT",), "forget90": ()},
                  qa_per_author=2, ds_size=20, max_new_tokens=40, sample_tokens=32, kl_items=20,
                  world_knowledge=20, threads=1,
                  retain_for={"forget01": "retain90", "forget05": "retain90", "forget20": "retain70",
                              "forget50": "retain10"}),
    # SmolLM2-135M-Instruct (pretrained, llm.models.SMOL; chat template), sized so one seed takes
    # <= 3 h on the 2-core CPU machine with the training and evaluation code of 2026-12-06 (fp32,
    # no bucketing, today's generation; faster code only shortens it). The cut: all 200 authors at
    # 2 QA pairs each (pipeline_data's consistent subset, as the cpu preset: 400 pairs; forget05 /
    # forget10 keep their 10 / 20 authors = 20 / 40 items, retain90 360), no real-author /
    # world-fact pairs in fine-tuning (the model brings its own knowledge; those sets only
    # evaluate). Unlearning batch 4 keeps the paper's 5 / 10 steps per epoch on forget05 / forget10.
    # Arithmetic (quiet machine, 2 threads: fwd + bwd + AdamW 133 tokens/s (issue 20; our shared-
    # machine check in docs/results.md), rows 84 tokens on average with the chat template and
    # SmolLM2's default system prompt (measured on TOFU's full), ~105 with padding):
    #   fine-tune target 400 rows x 3 epochs + retain90 360 x 3 = 2280 rows x 105 / 133 = 30 min
    #   unlearn 10 runs x 10 epochs: forget05 (20 x 3 methods + 40 x 2 RT methods, whose rows
    #     carry a retain row) + forget10 (40 x 3 + 80 x 2) = 420 rows/epoch x 10 x 105 / 133 = 55 min
    #   evaluate 10 x 10 epochs + 2 initial + 2 retain = 104 evaluations x 4 sets x ds_size 4 items
    #     x (~2.1 s scoring + 32 new tokens x ~0.045 s) + samples / KL ~5 s = 104 x 61 s = 105 min
    # = ~190 min at the first sizing's assumed evaluation rate (11 s per item at 200 new tokens,
    # issue 20), hence max_new_tokens 32 and the first ds_size of 4.
    # Measured later on the quiet machine (2 threads, final code of 2026-12-06): one evaluation at
    # these settings (forget10, 4 sets x 4 items, 32 new tokens) 16 s (21 s with process start),
    # so evaluation is ~104 x 21 s = 36 min, not 105; fine-tuning 146 tokens/s (fp32,
    # benchmarks/bench_cpu_train.py). One seed: ~2 h at 4 items, ~2.5 h at 8 — and ds_size is 8,
    # since at 4 Forget Quality could not tell the target from retain90 (docs/results.md).
    # Unlearning lr: provisional (the paper's 1e-5) until the GA-only sweep of docs/results.md's
    # "Pretrained model (SmolLM2-135M)" rule picks it (`--tasks forget10 --methods GA --unlearn-lr`).
    "smol": Preset(model="smol", finetune=Recipe(epochs=3, lr=1e-4, effective_batch=8, batch_size=8),
                   unlearn=Recipe(epochs=10, lr=1e-5, effective_batch=4, batch_size=4),
                   tasks=("forget05", "forget10"), methods=("GA", "GA+RT", "NPO", "NPO+RT"),
                   npo_betas=(1.0,), rt_ablation=(), qa_per_author=2, ds_size=8, max_new_tokens=32,
                   n_samples=1, sample_tokens=24, kl_items=8, template="chat", threads=2,
                   retain_for={"forget05": "retain90"}),
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
    beta: float | None = None        # None: the preset's beta
    max_grad_norm: float | None = None  # None: the trainer's default clipping (1.0); 0: off

    def beta_in(self, p: Preset) -> float:
        return p.beta if self.beta is None else self.beta

    @property
    def rt_weight(self) -> float:
        return self.retain_weight if self.method.endswith("+RT") else 0.0

    @property
    def id(self) -> str:
        slug = self.method.lower().replace("+", "_") + ("" if self.beta is None else f"-b{self.beta:g}")
        if self.max_grad_norm is not None:
            slug += "-noclip" if self.max_grad_norm == 0 else f"-clip{self.max_grad_norm:g}"
        return f"{self.task}-{slug}-rt{self.retain_weight:g}-s{self.seed}"


def plan_runs(p: Preset, extras: bool = True) -> list[RunSpec]:
    """Main grid (every task x method x seed, retain weight 1) plus, with ``extras``, NPO at the
    preset's extra betas (``npo_betas``) on every task, NPO+RT at the paper's large RT weights
    (forget50: 5, forget90: 12), the forget10 RT-weight ablation and the forget10 clipping ablation
    (``clip_ablation``: those methods without gradient clipping)."""
    runs = [RunSpec(t, m, s, 1.0) for t in p.tasks for m in p.methods_for(t) for s in p.seeds]
    if extras:
        runs += [RunSpec(t, "NPO", s, 1.0, "beta", b) for t in p.tasks for b in p.npo_betas
                 for s in p.seeds if b != p.beta]
        for t in p.tasks:
            if t in p.large_rt:
                runs += [RunSpec(t, "NPO+RT", s, p.large_rt[t], "rt_weight") for s in p.seeds]
        if "forget10" in p.tasks:
            runs += [RunSpec("forget10", "NPO+RT", s, w, "rt_weight")
                     for w in p.rt_ablation if w != 1.0 for s in p.seeds]
            runs += [RunSpec("forget10", m, s, 1.0, "no_clip", max_grad_norm=0.0)
                     for m in p.clip_ablation for s in p.seeds]
    seen, out = set(), []
    for r in runs:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def steps_per_epoch(n: int, recipe: Recipe) -> int:
    """As llm.train.loop plans it: total = epochs * n // batch, per epoch = total // epochs."""
    return max(1, (recipe.epochs * n // recipe.effective_batch) // recipe.epochs)
