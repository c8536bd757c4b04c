"""The benchmark's determinism fingerprint and figures (not timings)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from zoo import benchmarking
from zoo.models.mlp import MLP


def _train_tiny_mlp(seed: int, steps: int = 3):
  model = MLP(num_classes=3, widths=(8,))
  x = jax.random.normal(jax.random.key(123), (16, 5))
  y = jnp.arange(16) % 3
  params = model.init(jax.random.key(seed), x, train=False)['params']
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, x, train=True), y).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params


def test_fingerprint_is_equal_for_the_same_seed_and_differs_otherwise():
  first, again = _train_tiny_mlp(seed=0), _train_tiny_mlp(seed=0)
  assert benchmarking.params_fingerprint(first) == benchmarking.params_fingerprint(again)
  assert benchmarking.params_fingerprint(first) != benchmarking.params_fingerprint(_train_tiny_mlp(seed=1))
  assert benchmarking.params_fingerprint(first) != benchmarking.params_fingerprint(_train_tiny_mlp(seed=0, steps=4))


def test_fingerprint_sees_one_flipped_bit_and_the_tree_structure():
  params = {'a': jnp.zeros((3,)), 'b': jnp.ones((2, 2))}
  flipped = {'a': jnp.zeros((3,)).at[1].set(jnp.float32(1e-45)), 'b': jnp.ones((2, 2))}
  renamed = {'c': jnp.zeros((3,)), 'b': jnp.ones((2, 2))}
  fingerprints = {benchmarking.params_fingerprint(tree) for tree in (params, flipped, renamed)}
  assert len(fingerprints) == 3


def test_peak_flops_and_costs():
  assert benchmarking.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert benchmarking.peak_flops('cpu', 'float32') is None
  compiled = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 16)), jnp.ones((16, 4))).compile()
  costs = benchmarking.compiled_costs(compiled)
  assert costs['flops_per_step'] == 2 * 8 * 16 * 4
  assert costs['peak_memory_bytes'] is None or costs['peak_memory_bytes'] >= 4 * (8 * 16 + 16 * 4 + 8 * 4)
  assert benchmarking.summarize_ms([0.001] * 9 + [0.002]) == {'median': 1.0, 'p10': 1.0, 'p90': 1.1}


def test_blockwise_ratios_follow_each_block_and_reject_no_timings():
  slow_then_fast = [0.004] * 10 + [0.002] * 10 + [0.002] * 10  # the machine speeds up after the first block
  twin = [0.006] * 10 + [0.004] * 10 + [0.003] * 10
  ratios = benchmarking.blockwise_ratios(twin, slow_then_fast, 10)
  assert ratios['median'] == 1.5 and ratios['p10'] == pytest.approx(1.5) and ratios['p90'] == pytest.approx(1.9)
  assert benchmarking.blockwise_ratios([0.002] * 5, [0.001] * 5, 10)['median'] == 2.0  # one short block
  with pytest.raises(ValueError, match='timings on both sides'):
    benchmarking.blockwise_ratios([], [], 10)


def test_benchmark_tool_reports_and_reproduces_its_fingerprint(tfds_dir, tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from conftest import RAW_DATA_DIR, REPO  # pylint: disable=import-outside-toplevel
  history = tmp_path / 'history.jsonl'
  command = [sys.executable, str(REPO / 'experiments' / 'benchmark.py'),
             f'--config={REPO / "experiments" / "configs" / "mnist_mlp.py"}', '--steps=3', '--warmup=1',
             '--pipeline_batches=3', f'--data_dir={RAW_DATA_DIR}', f"--set=data.tfds_dir='{tfds_dir}'",
             f'--out={history}']
  first = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  record = json.loads(first.stdout.splitlines()[0])
  assert record['config'] == 'mnist_mlp' and record['steps'] == 3 and record['batch_size'] == 128
  assert record['flops_per_step'] > 0 and record['step_ms']['p10'] <= record['step_ms']['median']
  assert record['mfu'] is None  # no known peak for CPUs
  again = subprocess.run(command + [f'--compare={history}'], capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  lines = [json.loads(line) for line in again.stdout.splitlines()]
  assert lines[0]['params_hash'] == record['params_hash']
  assert lines[1]['compare'] == 'mnist_mlp' and lines[1]['same_params_hash'] is True
  assert len(history.read_text().splitlines()) == 2
