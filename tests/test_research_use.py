"""Research code: the builders take plain (partial) dicts, and init_params gives plain arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo import models
from zoo.data.pipeline import build_pipeline
from zoo.train import optim


def test_model_optimizer_and_pipeline_from_partial_dicts(tfds_dir):
  model = models.build({'name': 'mlp', 'widths': (16,)})
  variables = models.init_params(model, jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
  kernel = [leaf for leaf in jax.tree.leaves(variables['params']) if leaf.ndim == 2][0]
  assert isinstance(kernel, jax.Array) and kernel.ndim == 2 and float((kernel * 2).sum()) == 2 * float(kernel.sum())
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(variables))
  tx, schedule = optim.build({'name': 'adamw', 'learning_rate': 3e-4}, total_steps=10)
  assert isinstance(tx, optax.GradientTransformation) and np.isclose(schedule(0), 3e-4)
  pipeline = build_pipeline({'name': 'mnist', 'tfds_dir': tfds_dir, 'batch_size': 8}, seed=0)
  batch = next(pipeline.train_iterator())
  assert batch['image'].shape == (8, 28, 28, 1) and batch['image'].dtype == np.float32
