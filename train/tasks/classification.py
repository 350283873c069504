"""Classification: softmax cross-entropy (optional label smoothing), accuracy and top-5.

Serves every classifier: ResNet and ViT on images, RNNs on sequences of feature vectors.
Labels are class ids (B,), or soft labels (B, num_classes) floats (from the mixup/cutmix
ops, data/mix_ops.py): those are the targets as they are, and their argmax is the class
that accuracy counts.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from train.tasks.base import ApplyFn, Batch, EvalSums, Metrics, Task, masked_mean_parts


def _classes(labels: jax.Array) -> jax.Array:
    """(B,) class ids of (B,) ids or of (B, C) soft labels (their largest entry)."""
    return jnp.argmax(labels, -1) if labels.ndim == 2 else labels


@dataclasses.dataclass
class Classification(Task):
    """Fields (config.task.*): which features feed the model, how many classes, smoothing."""
    input_key: str = "image"
    label_key: str = "label"
    num_classes: int = 10
    label_smoothing: float = 0.0

    def init_args(self, batch: Batch):
        return (batch[self.input_key],), {}

    def _losses(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        soft = labels.ndim == 2  # (B, C) soft labels, else (B,) class ids
        targets = labels.astype(logits.dtype) if soft else jax.nn.one_hot(labels, self.num_classes)
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)  # (B,)

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        logits, new_state = apply(batch[self.input_key])
        labels = batch[self.label_key]
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
