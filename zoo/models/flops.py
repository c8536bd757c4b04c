"""Analytic flop counts of a model's forward pass, from shapes alone (no compiler involved).

Counts 2 flops per multiply-add of every convolution, dense layer and self-attention product
(Q K^T and the weighted sum of V); norms, activations, pooling and softmax are left out,
as in the usual published counts (ResNet-50: 4.1 G multiply-adds = 8.2 GFLOPs per 224 px image).
A training step costs about 3x the forward pass (the backward pass computes two products per
forward product: the input's and the weights' gradients).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax


def forward_flops(model: nn.Module, example_input: jax.Array | jax.ShapeDtypeStruct) -> float:
  """Flops of model(example_input, train=False) for the whole batch of `example_input` (abstract is fine).

  Scanned and rematerialised models are counted as their unscanned, plain twins (same products).
  """
  plain = model.clone(**{k: v for k, v in (('scan_layers', False), ('remat', 'none')) if hasattr(model, k)})
  total = 0.0

  def count(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__':
      return out
    if isinstance(module, (nn.Conv, nn.Dense, nn.DenseGeneral)):
      kernel = nn.meta.unbox(module.variables['params']['kernel'])
      features = module.features if isinstance(module.features, (tuple, list)) else (module.features,)
      total += 2.0 * math.prod(out.shape) * math.prod(kernel.shape) / math.prod(features)
    elif type(module).__name__ == 'MultiHeadSelfAttention':
      batch, length, dim = args[0].shape
      total += 2.0 * 2.0 * batch * length * length * dim  # Q K^T and weights @ V, all heads
    return out

  def apply(x):
    with nn.intercept_methods(count):
      return plain.init(jax.random.PRNGKey(0), x, train=False)

  jax.eval_shape(apply, example_input)
  return total
