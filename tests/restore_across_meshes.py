"""Subprocess helper for test_parallel: save on 8 devices (data), restore on 2x4 (fsdp x tensor) and on 1.

  python tests/restore_across_meshes.py TFDS_DIR WORKDIR

Trains a few mnist_cnn steps on a mesh of 8 simulated CPU devices on 'data'
with the launcher's loop (which checkpoints), then restores that checkpoint
onto each target mesh. Prints one JSON object per target: whether every
value equals the saved one, and whether every leaf has the target sharding.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax

jax.config.update('jax_num_cpu_devices', 8)

import numpy as np  # pylint: disable=wrong-import-position
from flax import serialization  # pylint: disable=wrong-import-position

from zoo.train.checkpoint import Checkpointer, abstract_like, load_state  # pylint: disable=wrong-import-position
from zoo.train.loop import build_experiment, train_and_evaluate  # pylint: disable=wrong-import-position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import load_config  # pylint: disable=wrong-import-position

TARGETS = {'fsdp2_tensor4': ({'fsdp': 2, 'tensor': 4}, None), 'single': ({'data': 1}, 1)}


def _by_path(tree) -> dict:
  """{'opt_state/0/mu/Dense_0/kernel': leaf}: dict keys, list and tuple indices alike."""
  name = lambda entry: str(getattr(entry, 'key', getattr(entry, 'idx', entry)))
  return {'/'.join(map(name, path)): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def main(tfds_dir: str, workdir: str) -> None:
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.num_train_steps = 4
  config.checkpoint.every = 4
  config.eval_every = 4
  config.data.eval_batch_size = 2000
  train_and_evaluate(config, workdir)
  saved = load_state(workdir)
  for name, (axes, device_count) in TARGETS.items():
    target = config.copy_and_resolve_references()
    target.mesh.axes = axes
    experiment = build_experiment(target, pathlib.Path(workdir), devices=jax.devices()[:device_count])
    checkpointer = Checkpointer(workdir)
    restored = checkpointer.restore(4, abstract_like(experiment.state), experiment.pipeline.train_iterator())
    checkpointer.close()
    restored_values = _by_path(serialization.to_state_dict(restored))
    saved_values = _by_path(saved)
    same_values = restored_values.keys() == saved_values.keys() and all(
        np.array_equal(np.asarray(restored_values[key]), saved_values[key]) for key in saved_values)
    same_shardings = all(r.sharding == s for r, s in
                         zip(jax.tree.leaves(restored), jax.tree.leaves(experiment.shardings)))
    kernel = restored.params['Dense_0']['kernel']
    print(json.dumps({'target': name, 'mesh': dict(experiment.mesh.shape), 'same_values': same_values,
                      'same_shardings': same_shardings, 'dense_kernel_spec': str(kernel.sharding.spec),
                      'dense_kernel_shard_shape': list(kernel.addressable_shards[0].data.shape)}))


if __name__ == '__main__':
  main(*sys.argv[1:])
