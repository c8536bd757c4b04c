"""int8 quantization of Dense and Conv layers: post-training (dynamic or calibrated static activations),
a real int8 inference path, and quantization-aware training with fake quantization.

Weights: symmetric, per output channel, int8 in [-127, 127], scale = max|w| / 127.
Activations: symmetric per tensor, scale = max|x| / 127, measured on each batch
('dynamic') or fixed from calibration batches ('static'). The int8 path
multiplies int8 operands with int32 accumulation (lax.dot_general /
lax.conv_general_dilated with preferred_element_type=int32) and rescales in f32.

Models are not rewritten: `quantized(mode, ...)` is a flax method interceptor
that replaces every nn.Dense / nn.Conv call inside its `with` block:

  with quantized('int8', weights):                 # or 'fake' (QAT), 'calibrate'
    logits = model.apply(variables, x, train=False)
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.errors import ConfigError

MODES = ('int8', 'fake', 'calibrate')
SUPPORTED = (nn.Dense, nn.Conv)
WEIGHT_NAMES = ('kernel', 'embedding', 'recurrent_kernel')  # params that a supported layer must own


def quantize_weight(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(int8 like kernel, f32[out] scale): symmetric per output channel (the last axis)."""
  scale = jnp.max(jnp.abs(kernel), axis=tuple(range(kernel.ndim - 1))) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  return jnp.clip(jnp.round(kernel / scale), -127, 127).astype(jnp.int8), scale.astype(jnp.float32)


def quantize_activation(x: jax.Array, scale: jax.Array) -> jax.Array:
  """int8 like x: round(x / scale) clipped to [-127, 127]."""
  return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8)


def activation_scale(x: jax.Array) -> jax.Array:
  """f32[] per-tensor scale max|x| / 127 (1 for an all-zero tensor)."""
  scale = jnp.max(jnp.abs(x)).astype(jnp.float32) / 127.0
  return jnp.where(scale > 0, scale, 1.0)


def fake_quantize(x: jax.Array, quantize) -> jax.Array:
  """x rounded through int8 in the forward pass, identity gradient (straight-through estimator)."""
  q, scale = quantize(x)
  return x + jax.lax.stop_gradient(q.astype(x.dtype) * scale - x)


def _linear(module: nn.Module, x: jax.Array, kernel: jax.Array, out_type) -> jax.Array:
  """The Dense or Conv product of x and kernel (no bias), accumulated in out_type."""
  if isinstance(module, nn.Conv):
    if not isinstance(module.padding, str) or module.mask is not None:
      raise ConfigError(f'Quantization supports nn.Conv with string padding and no mask; {module.path} has '
                        f'padding={module.padding!r}.')
    spatial = x.ndim - 2
    as_tuple = lambda v: (v,) * spatial if isinstance(v, int) or v is None else tuple(v)
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=as_tuple(module.strides or 1), padding=module.padding,
        lhs_dilation=as_tuple(module.input_dilation or 1), rhs_dilation=as_tuple(module.kernel_dilation or 1),
        dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC')),
        feature_group_count=module.feature_group_count, preferred_element_type=out_type)
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=out_type)


@dataclasses.dataclass
class Quantizer:
  """The interceptor behind `quantized`. calibration: module path -> max|x| seen (static activation scales)."""
  mode: str
  calibration: dict[str, Any] = dataclasses.field(default_factory=dict)
  static: bool = False
  quantized_paths: set[str] = dataclasses.field(default_factory=set)

  def __call__(self, next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__' or not isinstance(module, SUPPORTED):
      return next_fun(*args, **kwargs)
    x, path = args[0], '/'.join(module.path)
    self.quantized_paths.add(path)
    if self.mode == 'calibrate':
      observed = jnp.max(jnp.abs(x))
      self.calibration[path] = jnp.maximum(self.calibration.get(path, 0.0), observed)
      return next_fun(*args, **kwargs)
    params = nn.meta.unbox(module.variables['params'])  # params straight from init carry logical names
    kernel, bias = params['kernel'], params.get('bias')
    x_scale = self._activation_scale(x, path)
    if self.mode == 'fake':
      x = fake_quantize(x, lambda v: (quantize_activation(v, x_scale), x_scale))
      y = _linear(module, x, fake_quantize(kernel, quantize_weight), x.dtype)
    else:
      w_q, w_scale = quantize_weight(kernel)
      accumulated = _linear(module, quantize_activation(x, x_scale), w_q, jnp.int32)
      y = accumulated.astype(jnp.float32) * (x_scale * w_scale)
    return y + bias if bias is not None else y

  def _activation_scale(self, x, path):
    if not self.static:
      return jax.lax.stop_gradient(activation_scale(x))
    if path not in self.calibration:
      raise ConfigError(f'No calibrated activation scale for {path}; run calibrate() on a few batches first.')
    return jnp.maximum(jnp.asarray(self.calibration[path], jnp.float32) / 127.0, 1e-12)


@contextlib.contextmanager
def quantized(mode: str, calibration: dict[str, Any] | None = None):
  """Inside the block, model.apply runs its Dense/Conv layers in `mode`; yields the Quantizer.

  mode 'int8': int8 operands, int32 accumulation (static activation scales
  when `calibration` is given, else dynamic); 'fake': float compute with
  fake-quantized weights and activations (for QAT, gradients pass straight
  through); 'calibrate': float compute, records each layer's max|input|.
  The interception happens at trace time: jit a function inside the block
  that was not traced outside it (jax.jit caches traces per function).
  """
  if mode not in MODES:
    raise ConfigError(f'Quantization mode {mode!r}; use one of: {", ".join(MODES)}.')
  quantizer = Quantizer(mode, dict(calibration or {}), static=calibration is not None)
  with nn.intercept_methods(quantizer):
    yield quantizer


def check_supported(params: Any, quantized_paths: set[str]) -> None:
  """Raises ConfigError listing every layer with weights that quantization did not handle."""
  unsupported = []
  for path, _ in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]:
    names = [str(getattr(k, 'key', k)) for k in path]
    if names[-1] in WEIGHT_NAMES and '/'.join(names[:-1]) not in quantized_paths:
      unsupported.append('/'.join(names))
  if unsupported:
    raise ConfigError(f'int8 quantization supports nn.Dense and nn.Conv only; these weights belong to other '
                      f'layers: {", ".join(sorted(unsupported))}. Quantize a model built from Dense/Conv layers.')


def int8_weight_bytes(params: Any) -> int:
  """Bytes of the model stored with int8 kernels plus f32 per-channel scales, other params in f32."""
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'kernel':
      total += int(np.prod(leaf.shape)) + 4 * int(leaf.shape[-1])
    else:
      total += 4 * int(np.prod(leaf.shape))
  return total
