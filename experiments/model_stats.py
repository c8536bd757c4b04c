"""Parameter count and XLA's forward FLOPs per example of each config's model (for docs/models/*.md).

  python experiments/model_stats.py > benchmarks/model_stats.jsonl
  python experiments/model_stats.py --configs=mnist_cnn,sst2_lstm

Builds each config's model with zoo.models.build, initialises it on one example shaped as its
dataset gives it (images f32[1, 28, 28, 1]; tokens i32[1, data.max_length]), counts the params
(and the BatchNorm statistics apart) and takes the FLOPs of `model.apply(variables, x, train=False)`
from XLA's cost analysis of the compiled function. XLA counts a loop body once, so for the
recurrent models (whose time loop is a fori_loop) the figure covers one time step of the
recurrence; `recurrent_flops` gives the analytic count of their input and recurrent matmuls over all
steps (2 flops per multiply-add). Prints one JSON object per config.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
from absl import app, flags

from zoo import benchmarking
from zoo.models import build

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ['mnist_mlp', 'mnist_cnn', 'fashion_mnist_resnet', 'sst2_lstm', 'shakespeare_lstm', 'sst2_transformer',
           'shakespeare_transformer', 'binarized_mnist_vae', 'mnist_student']
GATES = {'lstm': 4, 'gru': 3}

_CONFIGS = flags.DEFINE_list('configs', CONFIGS, 'Config names (experiments/configs/<name>.py).')


def load_config(name: str):
  """experiments/configs/<name>.py's get_config()."""
  spec = importlib.util.spec_from_file_location(name, REPO / 'experiments' / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def example(config) -> jax.Array:
  """One input example, batch 1, shaped and typed as the config's pipeline feeds the model."""
  if config.model.name in ('rnn_classifier', 'rnn_lm', 'transformer'):
    return jnp.ones((1, config.data.max_length), jnp.int32)
  return jnp.zeros((1, 28, 28, 1), jnp.float32)


def recurrent_flops(model_config, length: int) -> int:
  """2 x multiply-adds of every LSTM/GRU layer's input and recurrent matmuls over `length` steps, one example."""
  gates, hidden, width = GATES[model_config.cell], model_config.hidden, model_config.embed_dim
  directions = 2 if model_config.get('bidirectional', False) else 1
  total = 0
  for _ in range(model_config.num_layers):
    total += directions * 2 * length * (width + hidden) * gates * hidden
    width = hidden * directions
  return total


def stats(name: str) -> dict:
  """The JSON record of one config."""
  config = load_config(name)
  model = build(config.model)
  x = example(config)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1), 'latent': jax.random.PRNGKey(2)}
  variables = model.init(rngs, x, train=False)
  count = lambda tree: sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree))
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False, rngs={'latent': jax.random.PRNGKey(3)}))
  cost = apply.lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  record = {'config': name, 'model': config.model.name, 'input': f'{x.dtype}{list(x.shape)}',
            'params': count(variables['params']), 'batch_stats': count(variables.get('batch_stats', {})),
            'xla_flops_per_example': int(cost['flops'])}
  if config.model.name in ('rnn_classifier', 'rnn_lm'):
    record['recurrent_flops'] = recurrent_flops(config.model, x.shape[1])
  return record


def main(argv):
  del argv
  for name in _CONFIGS.value:
    print(json.dumps({**stats(name), 'jax': jax.__version__, 'backend': jax.default_backend(),
                      'commit': benchmarking.commit()}), flush=True)


if __name__ == '__main__':
  app.run(main)
