"""Classification: softmax cross-entropy (optional label smoothing), accuracy and top-5.

Serves every classifier: ResNet and ViT on images, RNNs on sequences of feature vectors.
Labels are class ids (B,), or soft labels (B, num_classes) floats (from the mixup/cutmix
ops, data/mix_ops.py): those are the targets as they are, and their argmax is the class
that accuracy counts.
With `adversarial` set, each training batch is replaced by adversarial inputs found by an
attack inside the jitted step (Madry et al. 2018's PGD; Wong et al. 2020's FGSM from a
random start), drawn from the step's task key so a resumed run finds the same ones.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from errors import ConfigError, UnknownNameError, unknown_name_message
from train.limits import attacks
from train.tasks.base import ApplyFn, Batch, EvalSums, Metrics, Task, masked_mean_parts

ADVERSARIAL = ("", "pgd", "fgsm_rs")


def _classes(labels: jax.Array) -> jax.Array:
    """(B,) class ids of (B,) ids or of (B, C) soft labels (their largest entry)."""
    return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


@dataclasses.dataclass
class Classification(Task):
    """Fields (config.task.*): which features feed the model, how many classes, smoothing,
    the inputs' valid range, and adversarial training."""
    input_key: str = "image"
    label_key: str = "label"
    num_classes: int = 10
    label_smoothing: float = 0.0
    # The valid range of the model's inputs after preprocessing (digits: `to_float(-1, 1)`);
    # attacks, adversarial training and attributions stay inside it.
    input_range: tuple[float, float] = (-1.0, 1.0)
    # Adversarial training: "" (off) | "pgd" (adv_steps steps from a random start) |
    # "fgsm_rs" (one step from a random start). train/loss and train/accuracy are then
    # measured on the adversarial inputs.
    adversarial: str = ""
    adv_norm: str = "linf"         # linf | l2, in input units (the range above)
    adv_eps: float = 0.1           # the ball's radius
    adv_steps: int = 7             # pgd only
    adv_step_size: float = 0.0     # relative to adv_eps; 0 = 2.5 / adv_steps (pgd), 1.25 (fgsm_rs)

    def __post_init__(self):
        self.input_range = tuple(float(v) for v in self.input_range)  # config.json gives a list
        if len(self.input_range) != 2 or not self.input_range[0] < self.input_range[1]:
            raise ConfigError(f"config.task.input_range must be (low, high) with low < high, "
                              f"got {self.input_range}.")
        if self.adversarial not in ADVERSARIAL:
            raise UnknownNameError(unknown_name_message("task.adversarial", self.adversarial,
                                                        [a or '""' for a in ADVERSARIAL]))
        attacks.check_norm(self.adv_norm)
        if self.adversarial and (self.adv_eps < 0 or self.adv_steps < 1 or self.adv_step_size < 0):
            raise ConfigError("config.task.adv_eps and adv_step_size must not be negative and "
                              f"adv_steps must be >= 1, got {self.adv_eps}, {self.adv_step_size}, "
                              f"{self.adv_steps}.")

    def init_args(self, batch: Batch):
        return (batch[self.input_key],), {}

    def logits_fn(self, apply: ApplyFn) -> attacks.LogitsFn:
        """inputs (B, ...) -> logits (B, C): the model as attacks and attributions see it."""
        return lambda x: apply(x)[0]

    def _losses(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        soft = labels.ndim == 2  # (B, C) soft labels, else (B,) class ids
        targets = labels.astype(logits.dtype) if soft else jax.nn.one_hot(labels, self.num_classes)
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)  # (B,)

    def adversarial_inputs(self, apply: ApplyFn, x: jax.Array, labels: jax.Array,
                           rng: jax.Array) -> jax.Array:
        """(B, ...) -> (B, ...): the attack of `adversarial` on the training model (train
        mode: batch statistics of the attacked batch; their updates are dropped). No
        gradient flows through the attack (Danskin: the loss at the maximiser)."""
        if self.adversarial == "fgsm_rs":
            steps, step_size = 1, self.adv_eps * (self.adv_step_size or 1.25)
        else:
            steps = self.adv_steps
            step_size = attacks.default_step_size(self.adv_eps, steps, self.adv_step_size)
        x_adv = attacks.pgd(self.logits_fn(apply), x, labels, rng, eps=self.adv_eps, steps=steps,
                            step_size=step_size, norm=self.adv_norm, bounds=self.input_range,
                            random_init=True, restarts=1, keep_best=False)
        return jax.lax.stop_gradient(x_adv)

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        inputs, labels = batch[self.input_key], batch[self.label_key]
        if self.adversarial:
            inputs = self.adversarial_inputs(apply, inputs, labels, rng)
        logits, new_state = apply(inputs)
        loss = self._losses(logits, labels).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == _classes(labels))
        return loss, {"loss": loss, "accuracy": accuracy}, new_state

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        logits, _ = apply(batch[self.input_key])
        labels = batch[self.label_key]
        classes = _classes(labels)
        mask = batch["mask"]
        top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == classes[:, None], axis=-1)
        return {
            "loss": masked_mean_parts(self._losses(logits, labels), mask),
            "accuracy": masked_mean_parts(jnp.argmax(logits, -1) == classes, mask),
            "top5_accuracy": masked_mean_parts(top5, mask),
        }
