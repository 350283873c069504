"""Classification: softmax cross-entropy (optional label smoothing), accuracy and top-5.

Serves every classifier: ResNet and ViT on images, RNNs on sequences of feature vectors.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from train.tasks.base import ApplyFn, Batch, EvalSums, Metrics, Task, masked_mean_parts


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
        targets = jax.nn.one_hot(labels, self.num_classes)
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)  # (B,)

    def loss(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> tuple[jax.Array, Metrics, dict]:
        logits, new_state = apply(batch[self.input_key])
        labels = batch[self.label_key]
        loss = self._losses(logits, labels).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
        return loss, {"loss": loss, "accuracy": accuracy}, new_state

    def eval_sums(self, apply: ApplyFn, batch: Batch, rng: jax.Array) -> EvalSums:
        logits, _ = apply(batch[self.input_key])
        labels = batch[self.label_key]
        mask = batch["mask"]
        top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == labels[:, None], axis=-1)
        return {
            "loss": masked_mean_parts(self._losses(logits, labels), mask),
            "accuracy": masked_mean_parts(jnp.argmax(logits, -1) == labels, mask),
            "top5_accuracy": masked_mean_parts(top5, mask),
        }
