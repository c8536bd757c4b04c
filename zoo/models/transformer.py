"""Transformer encoder with sinusoidal positions (Vaswani et al. 2017), pre-LayerNorm."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.kernels.attention import attention_weights, dot_product_attention
from zoo.models.layers import (
  POOLINGS,
  Dropout,
  Pool,
  constrain_batch,
  dense,
  maybe_remat,
  norm_param_init,
  perturbation_point,
)


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
  """f32[length, dim]: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)."""
  positions = np.arange(length, dtype=np.float64)[:, None]
  frequencies = 1.0 / 10000.0 ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
  table = np.zeros((length, dim), dtype=np.float64)
  table[:, 0::2] = np.sin(positions * frequencies)
  table[:, 1::2] = np.cos(positions * frequencies[:dim // 2])
  return table.astype(np.float32)


def layer_norm() -> nn.LayerNorm:
  return nn.LayerNorm(scale_init=norm_param_init(nn.initializers.ones, 'embed'),
                      bias_init=norm_param_init(nn.initializers.zeros, 'embed'))


class MultiHeadSelfAttention(nn.Module):
  """Self-attention through zoo.kernels.attention.dot_product_attention.

  Applied with mutable=['intermediates'], it also stores its attention
  weights f32[B, H, T, T] as 'attention_weights' (see zoo.inspect.attention_maps).
  """
  num_heads: int
  dropout_rate: float = 0.0
  causal: bool = False
  directional: bool = False
  attention: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, *, train: bool) -> jax.Array:
    """x: f32[B, T, D], valid: bool[B, T] (False at padding) -> f32[B, T, D]."""
    d_model = x.shape[-1]
    if d_model % self.num_heads:
      raise ValueError(f'd_model {d_model} is not divisible by num_heads {self.num_heads}.')
    head_dim = d_model // self.num_heads
    projection = lambda name: nn.DenseGeneral(
        (self.num_heads, head_dim), name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('embed', 'heads', 'kv')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('heads', 'kv')))
    query, key, value = projection('query')(x), projection('key')(x), projection('value')(x)
    # Init only needs shapes, and runs in the params' f32: 'xla' there lets a half-precision kernel
    # ('cudnn') be configured for training under compute_dtype without failing at init.
    attended = dot_product_attention(query, key, value, valid, causal=self.causal, directional=self.directional,
                                     implementation='xla' if self.is_initializing() else self.attention)
    if self.is_mutable_collection('intermediates'):  # attention maps for inspection (zoo.inspect)
      self.sow('intermediates', 'attention_weights',
               attention_weights(query, key, valid, self.causal, self.directional))
    out = nn.DenseGeneral(
        d_model, axis=(-2, -1), name='out',
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('heads', 'kv', 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)))(attended)
    return Dropout(self.dropout_rate, deterministic=not train)(out)


class EncoderBlock(nn.Module):
  """x + Attention(LN(x)), then x + FFN(LN(x)) with a GELU feed-forward."""
  num_heads: int
  d_ff: int
  dropout_rate: float = 0.0
  causal: bool = False
  directional: bool = False
  attention: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array, train: bool) -> jax.Array:
    """x: f32[B, T, D], valid: bool[B, T] -> f32[B, T, D]. (train may be positional, for nn.remat.)"""
    attention = MultiHeadSelfAttention(num_heads=self.num_heads, dropout_rate=self.dropout_rate, causal=self.causal,
                                       directional=self.directional, attention=self.attention)
    x = constrain_batch(x)
    x = x + attention(layer_norm()(x), valid, train=train)
    y = nn.gelu(dense(self.d_ff, ('embed', 'mlp'))(layer_norm()(x)))
    y = Dropout(self.dropout_rate, deterministic=not train)(y)
    y = dense(x.shape[-1], ('mlp', 'embed'))(y)
    return x + Dropout(self.dropout_rate, deterministic=not train)(y)


class _ScanStep(EncoderBlock):
  """EncoderBlock in nn.scan's form: (carry, broadcast inputs) -> (carry, None)."""

  def __call__(self, x: jax.Array, valid: jax.Array, train: bool) -> tuple[jax.Array, None]:
    return super().__call__(x, valid, train), None


SCANNED_BLOCKS = 'layers'  # the scanned layout's entry: one EncoderBlock's variables stacked on a leading axis


def encoder_blocks(x: jax.Array, valid: jax.Array, *, train: bool, num_layers: int, scan_layers: bool = False,
                   remat: str = 'none', **block: object) -> jax.Array:
  """x f32[B, T, D] through `num_layers` EncoderBlocks(**block), created in the calling module.

  Unscanned (scan_layers False) they are EncoderBlock_0, EncoderBlock_1, ...; scanned, one nn.scan over
  identical blocks whose variables are stacked on a leading axis (logical name 'layers') in the entry
  SCANNED_BLOCKS, so the program holds one block whatever the depth (layers.stack_layers /
  unstack_layers convert checkpoints between the two). remat names a layers.REMAT_POLICIES entry
  applied to each block.
  """
  if not scan_layers:
    block_cls = maybe_remat(EncoderBlock, remat, static_argnums=(3,))
    for index in range(num_layers):
      x = block_cls(**block, name=f'EncoderBlock_{index}')(x, valid, train)
    return x
  step = nn.scan(maybe_remat(_ScanStep, remat, static_argnums=(3,)),
                 variable_axes={'params': 0, 'intermediates': 0}, split_rngs={'params': True, 'dropout': True},
                 in_axes=(nn.broadcast, nn.broadcast), length=num_layers,
                 metadata_params={nn.PARTITION_NAME: SCANNED_BLOCKS})
  x, _ = step(**block, name=SCANNED_BLOCKS)(x, valid, train)
  return x


class TransformerEncoder(nn.Module):
  """Token embedding + sinusoidal positions, pre-LN encoder blocks, final LayerNorm and a head.

  Tokens equal to `pad_id` are masked as keys (and excluded from pooling).
  head='classify' returns f32[B, num_classes] (pooling 'mean', 'max' or 'attention'
  over real tokens (layers.Pool), or 'cls': the first token); head='lm' returns
  f32[B, T, vocab_size]. The first block's input is the perturbation point 'embedding'
  (layers.perturbation_point, for adversarial training).

  Attributes:
    vocab_size, max_len: embedding table size and longest sequence.
    d_model, num_heads, num_layers, d_ff: block sizes.
    causal: each position attends only to itself and earlier ones.
    directional: in every block, half the heads attend to the position and earlier ones, half to
      it and later ones (DiSAN's forward and backward masks; an order bias for small data).
    attention: the attention kernel, see zoo.kernels.attention ('auto' picks per backend).
    scan_layers: the blocks as one nn.scan (compile time independent of depth; see encoder_blocks).
    remat: rematerialisation policy per block (layers.REMAT_POLICIES: 'none', 'full', 'dots_saveable', ...).
  """
  vocab_size: int
  max_len: int = 512
  d_model: int = 256
  num_heads: int = 4
  num_layers: int = 4
  d_ff: int = 1024
  dropout_rate: float = 0.1
  causal: bool = False
  directional: bool = False
  pad_id: int = 0
  head: str = 'classify'
  pooling: str = 'mean'
  num_classes: int = 2
  attention: str = 'auto'
  scan_layers: bool = False
  remat: str = 'none'

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """tokens: i32[B, T] -> logits (see the class docstring)."""
    if tokens.ndim != 2:
      raise ValueError(f'TransformerEncoder takes tokens i32[batch, length]; got shape {tokens.shape}.')
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f'Sequence length {length} exceeds the positional table (max_len={self.max_len}); '
                       'raise config.model.max_len or truncate the inputs.')
    if self.head not in ('classify', 'lm') or self.pooling not in POOLINGS + ('cls',):
      raise ValueError(f"head={self.head!r}, pooling={self.pooling!r}: use head 'classify' or 'lm', "
                       f"pooling 'cls', {', '.join(map(repr, POOLINGS))}.")
    # Entries start at std 1/sqrt(d_model); the sqrt(d_model) scale below brings them to unit size, on a par
    # with the positions. (At std 1 the scaled tokens, ~14x the positions and the blocks' outputs, left the
    # character LM at bigram level: 2.35 nats/char after 750 steps.)
    embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(self.d_model ** -0.5), ('vocab', 'embed')))
    x = embed(tokens)  # in the params' dtype: f32, or bf16 under config.compute_dtype
    positions = sinusoidal_positions(self.max_len, self.d_model)[None, :length]
    x = x * jnp.asarray(np.sqrt(self.d_model), x.dtype) + jnp.asarray(positions, x.dtype)
    x = Dropout(self.dropout_rate, deterministic=not train)(x)
    x = perturbation_point(self, 'embedding', x)
    valid = tokens != self.pad_id
    x = encoder_blocks(x, valid, train=train, num_layers=self.num_layers, scan_layers=self.scan_layers,
                       remat=self.remat, num_heads=self.num_heads, d_ff=self.d_ff, dropout_rate=self.dropout_rate,
                       causal=self.causal, directional=self.directional, attention=self.attention)
    x = layer_norm()(x)
    if self.head == 'lm':
      return dense(self.vocab_size, ('embed', 'vocab'))(x)
    pooled = x[:, 0] if self.pooling == 'cls' else Pool(self.pooling)(x, valid)
    return dense(self.num_classes, ('embed', 'classes'))(pooled)
