"""LSTM and GRU layers, stacks, a sequence classifier and a character language model.

Speed: each layer hands its input projection's params to
`zoo.kernels.recurrence.recurrent_layer`, which projects several time steps per
matmul (all of them at once, outside the loop, for 'scan') and does only the
[B, H] x [H, G*H] recurrent matmul per step.
Padding: sequences are right-padded with `pad_id`; steps past a sequence's
length neither change the state nor emit output, and the backward direction
reverses each sequence within its own length, so padding never leaks.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.kernels.cells import GATES
from zoo.kernels.recurrence import recurrent_layer
from zoo.models.layers import POOLINGS, DenseParams, Dropout, Pool, dense, perturbation_point


def reverse_within_length(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses x[b, :lengths[b]] along time for each b; padding stays in place. x: [B, T, ...]."""
  steps = jnp.arange(x.shape[1])[None, :]
  index = jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class RecurrentLayer(nn.Module):
  """One direction of an LSTM or GRU over a right-padded batch.

  Attributes:
    hidden: state size H.
    cell: 'lstm' or 'gru' (GRU as in cuDNN: the reset gate scales the
      recurrent candidate term, which has its own bias).
    reverse: run from each sequence's last real step to its first.
    implementation: the recurrence kernel, see `zoo.kernels.recurrence` ('auto' picks per backend).
  """
  hidden: int
  cell: str = 'lstm'
  reverse: bool = False
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: f32[B, T, D], valid: bool[B, T] (False at padding, after the real steps) ->
    (outputs f32[B, T, H] (0 at pads), last state f32[B, H])."""
    if self.cell not in GATES:
      raise ValueError(f'Unknown cell {self.cell!r}; use one of: {", ".join(GATES)}.')
    gates, hidden = GATES[self.cell], self.hidden
    lengths = valid.sum(-1)
    if self.reverse:
      x = reverse_within_length(x, lengths)
    input_kernel, input_bias = DenseParams(gates * hidden, ('embed', 'mlp'), name='input')(x.shape[-1])
    recurrent_kernel = self.param(
        'recurrent_kernel', nn.with_logical_partitioning(nn.initializers.orthogonal(), ('rnn_hidden', 'mlp')),
        (hidden, gates * hidden))
    recurrent_bias = self.param(
        'recurrent_bias', nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)), (gates * hidden,))
    time_major_valid = (jnp.arange(x.shape[1])[:, None] < lengths[None, :])[..., None]  # [T, B, 1]
    outputs, state = recurrent_layer(self.cell, x.swapaxes(0, 1), time_major_valid, input_kernel, input_bias,
                                     recurrent_kernel, recurrent_bias, implementation=self.implementation)
    outputs = outputs.swapaxes(0, 1)
    if self.reverse:
      outputs = reverse_within_length(outputs, lengths)
    return outputs, state[0]


class RNNEncoder(nn.Module):
  """Stacked (optionally bidirectional) recurrent layers with dropout between layers."""
  hidden: int
  num_layers: int = 1
  cell: str = 'lstm'
  bidirectional: bool = False
  dropout_rate: float = 0.0
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """x: f32[B, T, D], valid: bool[B, T] -> (outputs f32[B, T, H*dirs], last states f32[B, H*dirs])."""
    for layer in range(self.num_layers):
      if layer:
        x = Dropout(self.dropout_rate, deterministic=not train)(x)
      directions = [RecurrentLayer(hidden=self.hidden, cell=self.cell, implementation=self.implementation,
                                   name=f'layer{layer}_forward')(x, valid)]
      if self.bidirectional:
        directions.append(RecurrentLayer(hidden=self.hidden, cell=self.cell, reverse=True,
                                         implementation=self.implementation, name=f'layer{layer}_backward')(x, valid))
      x = jnp.concatenate([out for out, _ in directions], axis=-1)
      last = jnp.concatenate([state for _, state in directions], axis=-1)
    return x, last


def _embed(vocab_size: int, dim: int) -> nn.Embed:
  return nn.Embed(vocab_size, dim,
                  embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.1), ('vocab', 'embed')))


class RNNClassifier(nn.Module):
  """Embedding -> RNNEncoder -> pooling -> dropout -> class logits.

  tokens: i32[B, T], right-padded with pad_id -> f32[B, num_classes].
  pooling: 'last', the last state of each direction; or 'mean', 'max' (a BiLSTM-max
  sentence encoder, Conneau et al. 2017) or 'attention' (the Flax SST-2 example's)
  over the encoder's outputs at real tokens (layers.Pool). The encoder's input is the
  perturbation point 'embedding' (layers.perturbation_point, for adversarial training).
  """
  vocab_size: int
  embed_dim: int = 128
  hidden: int = 256
  num_layers: int = 1
  cell: str = 'lstm'
  bidirectional: bool = False
  dropout_rate: float = 0.0
  num_classes: int = 2
  pad_id: int = 0
  pooling: str = 'last'
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """tokens: i32[B, T] -> logits f32[B, num_classes]."""
    if tokens.ndim != 2:
      raise ValueError(f'RNNClassifier takes tokens i32[batch, length]; got shape {tokens.shape}.')
    if self.pooling not in ('last',) + POOLINGS:
      raise ValueError(f"pooling={self.pooling!r}: use 'last', {', '.join(map(repr, POOLINGS))}.")
    valid = tokens != self.pad_id
    x = Dropout(self.dropout_rate, deterministic=not train)(_embed(self.vocab_size, self.embed_dim)(tokens))
    x = perturbation_point(self, 'embedding', x)
    outputs, last = RNNEncoder(hidden=self.hidden, num_layers=self.num_layers, cell=self.cell,
                               bidirectional=self.bidirectional, dropout_rate=self.dropout_rate,
                               implementation=self.implementation)(x, valid, train=train)
    pooled = last if self.pooling == 'last' else Pool(self.pooling)(outputs, valid)
    pooled = Dropout(self.dropout_rate, deterministic=not train)(pooled)
    return dense(self.num_classes, ('mlp', 'classes'))(pooled)


class RNNLanguageModel(nn.Module):
  """Embedding -> unidirectional RNNEncoder -> dropout -> next-token logits at every position.

  tokens: i32[B, T] (no padding) -> f32[B, T, vocab_size].
  """
  vocab_size: int
  embed_dim: int = 128
  hidden: int = 512
  num_layers: int = 2
  cell: str = 'lstm'
  dropout_rate: float = 0.0
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """tokens: i32[B, T] -> logits f32[B, T, vocab_size]."""
    if tokens.ndim != 2:
      raise ValueError(f'RNNLanguageModel takes tokens i32[batch, length]; got shape {tokens.shape}.')
    valid = jnp.ones(tokens.shape, bool)
    x = Dropout(self.dropout_rate, deterministic=not train)(_embed(self.vocab_size, self.embed_dim)(tokens))
    outputs, _ = RNNEncoder(hidden=self.hidden, num_layers=self.num_layers, cell=self.cell,
                            dropout_rate=self.dropout_rate, implementation=self.implementation)(x, valid, train=train)
    outputs = Dropout(self.dropout_rate, deterministic=not train)(outputs)
    return dense(self.vocab_size, ('mlp', 'vocab'))(outputs)
