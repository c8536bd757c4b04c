"""Zoo models with published weights as Flax NNX modules (through flax.nnx.bridge.ToNNX)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from flax import nnx
from flax.nnx.bridge import variables as bridge_variables


def to_nnx(model: nn.Module, variables: dict[str, Any], seed: int = 0) -> nnx.Module:
  """An NNX module running `model` with `variables` ({'params': ..., 'batch_stats': ...}, plain arrays).

  Call it as the linen module: `module(x, train=False)`. Its params are nnx.Param (BatchNorm statistics
  nnx.BatchStat) under the linen names, so nnx.split / nnx.Optimizer / nnx.jit treat it like any NNX module;
  `seed` seeds its dropout (and the VAE's 'latent') streams.
  """
  module = nnx.bridge.ToNNX(model, rngs=nnx.Rngs(seed))
  for name, value in bridge_variables.linen_vars_to_nnx_attrs(variables).items():
    setattr(module, name, nnx.data(value))
  return module
