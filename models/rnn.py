"""Stacked LSTM/GRU language models and sequence classifiers over Linen `nn.RNN`.

    RNN(cell="lstm", hidden=650, vocab_size=10000)   # Zaremba et al. 2014 "medium" PTB, 20M params
    RNN(cell="lstm", hidden=1500, vocab_size=10000)  # Zaremba et al. 2014 "large" PTB, 66M params
    RNN(cell="gru", hidden=128, num_classes=10)      # 8x8 digits row by row: (B, 8, 8) -> (B, 10)

Inputs are int tokens (B, T) when `vocab_size` is set, else float features (B, T, F).
With `num_classes` the model classifies the sequence from the top layer's last step;
otherwise it returns next-token logits (B, T, vocab_size) at every step.

Decoding costs O(1) per token: with `decode=True` each layer's carry lives in the
"cache" collection, the same protocol as a GPT's KV cache:

    cache = model.init(rng, jnp.zeros((B, max_len), jnp.int32), train=False, decode=True)["cache"]
    # or, without running anything: cache = models.decoding.init_cache(model, B)
    logits, upd = model.apply({"params": params, "cache": cache}, tok, train=False,
                              decode=True, mutable=["cache"])   # tok: (B, 1) or a (B, T) prefill
    cache = upd["cache"]

The cache holds `carry_{i}`: (c, h) for an LSTM layer, h for a GRU layer, each (B, hidden).
`init` leaves it at zeros (the fresh state); only `apply` advances it.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from errors import ConfigError, UnknownNameError, unknown_name_message

# name -> Linen cell. OptimizedLSTMCell has the parameters of nn.LSTMCell (one bias
# per gate, on the recurrent kernel) but runs the four gates as one matmul.
CELLS: dict[str, type[nn.RNNCellBase]] = {
    "lstm": nn.OptimizedLSTMCell,
    "gru": nn.GRUCell,
}

# Input kernels map features -> hidden; recurrent kernels hidden -> hidden shard only
# their output axis, so no mesh axis is named twice in one parameter.
input_kernel_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
recurrent_kernel_init = nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, "mlp"))
cell_bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",))


class RNN(nn.Module):
    """A stack of LSTM or GRU layers with an embedding and an output head.

    Attributes:
      cell: "lstm" or "gru".
      num_layers: number of stacked recurrent layers.
      hidden: width of every layer's state (and of the token embedding).
      vocab_size: if set, inputs are int tokens (B, T) embedded to `hidden`; else inputs
        are float features (B, T, F). Also the size of the per-step output head.
      num_classes: if set, return (B, num_classes) logits from the last step of the top
        layer (sequence classification); else return (B, T, vocab_size) logits.
      dropout: dropout rate between recurrent layers (not on the recurrent connections,
        nor on the embedding or the head); uses the "dropout" rng when `train=True`.
      dtype: compute dtype ("float32" or "bfloat16"); parameters and carries stay float32.
    """
    cell: str = "lstm"
    num_layers: int = 2
    hidden: int = 256
    vocab_size: int | None = None
    num_classes: int | None = None
    dropout: float = 0.0
    dtype: str = "float32"

    def _check(self) -> type[nn.RNNCellBase]:
        if self.cell not in CELLS:
            raise UnknownNameError(unknown_name_message("RNN cell", self.cell, list(CELLS)))
        if self.vocab_size is None and self.num_classes is None:
            raise ConfigError("RNN needs vocab_size (language model) or num_classes (classifier).")
        if self.num_layers < 1:
            raise ConfigError(f"RNN num_layers must be >= 1, got {self.num_layers}.")
        return CELLS[self.cell]

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool, decode: bool = False) -> jnp.ndarray:
        """x: (B, T) int tokens or (B, T, F) features -> (B, T, vocab) or (B, classes) logits."""
        cell_cls = self._check()
        dtype = jnp.dtype(self.dtype)
        if self.vocab_size is not None:
            x = nn.Embed(num_embeddings=self.vocab_size, features=self.hidden, dtype=dtype, name="embed",
                         embedding_init=nn.with_logical_partitioning(
                             nn.initializers.normal(1.0), ("vocab", "embed")))(x)  # (B, T, H)
        else:
            x = x.astype(dtype)  # (B, T, F)
        for i in range(self.num_layers):
            cell = cell_cls(features=self.hidden, dtype=dtype, kernel_init=input_kernel_init,
                            recurrent_kernel_init=recurrent_kernel_init, bias_init=cell_bias_init,
                            name=f"layer_{i}")  # the parameters live on the cell
            rnn = nn.RNN(cell=cell)
            if decode:
                initialized = self.has_variable("cache", f"carry_{i}")
                carry = self.variable("cache", f"carry_{i}", cell.initialize_carry,
                                      jax.random.key(0), x[:, 0].shape)  # (B, H) each
                new_carry, x = rnn(x, initial_carry=carry.value, return_carry=True)
                if initialized:  # `init` must hand back the fresh (zero) state
                    carry.value = new_carry
            else:
                x = rnn(x)  # (B, T, H)
            if i < self.num_layers - 1 and self.dropout > 0:
                x = nn.Dropout(rate=self.dropout, deterministic=not train)(x)
        if self.num_classes is not None:
            x = nn.Dense(features=self.num_classes, dtype=dtype, name="head",
                         kernel_init=nn.with_logical_partitioning(
                             nn.initializers.lecun_normal(), ("embed", "classes")),
                         bias_init=nn.with_logical_partitioning(
                             nn.initializers.zeros, ("classes",)))(x[:, -1])  # (B, classes)
        else:
            x = nn.Dense(features=self.vocab_size, dtype=dtype, name="head",
                         kernel_init=nn.with_logical_partitioning(
                             nn.initializers.lecun_normal(), ("embed", "vocab")),
                         bias_init=nn.with_logical_partitioning(
                             nn.initializers.zeros, ("vocab",)))(x)  # (B, T, vocab)
        return x.astype(jnp.float32)

