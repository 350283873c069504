"""What an evaluator is and what it gets: the interface shared by train/evaluators/*."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from train.tasks.base import Task, TaskContext


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use at one evaluation. It never sees the config: sources
    come through `source(split)`, opened once per run."""
    task: Task
    state: Any                         # the TrainState (eval uses its EMA params when kept)
    eval_step: Callable                # jitted (state, batch) -> the task's masked eval sums
    mesh: Any
    source: Callable[[str, str], Sequence[dict]]  # (split, preprocess) -> source, cached
    train_split: str
    task_context: TaskContext          # for host-side generation (sampling evaluators)
    sample: Any                        # config.sample: the sampler settings


@dataclasses.dataclass
class Evaluator:
    """Common fields, already resolved (see `train.evaluators.resolve`); subclasses add
    their own fields with defaults and implement `run`."""
    name: str
    split: str
    preprocess: str
    every: int
    batch_size: int
    max_batches: int         # 0 = the whole split
    prefix: str

    def due(self, step: int, last: bool) -> bool:
        """Whether to run after `step`: every `every` steps, and always after the last."""
        return last or (self.every > 0 and step % self.every == 0)

    def check(self, task: Task, source: Callable[[str, str], Sequence[dict]]) -> None:
        """Raises a ConfigError if this evaluator cannot work with `task` and the data;
        called once when the run is built, before any compute."""

    def run(self, ctx: EvalContext) -> dict[str, float]:
        """Metric name -> value (without the prefix)."""
        raise NotImplementedError
