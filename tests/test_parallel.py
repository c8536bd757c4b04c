"""Parallelism changes speed, never results: meshes, rules, strategies, accumulation, bf16, many processes.

Many devices run in subprocesses with 8 simulated CPU devices; the rest of
the suite keeps one device.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import RAW_DATA_DIR, REPO
from jax.sharding import PartitionSpec as P

from zoo.errors import ConfigError
from zoo.parallel import distributed, make_mesh, strategies
from zoo.parallel.mesh import rules_table, spec_for
from zoo.train.loop import build_experiment
from zoo.train.step import compile_steps, loss_and_grads
from zoo.train.writers import read_metrics

TOLERANCE = 1e-5


def _python(args: list[str], env_extra: dict | None = None, timeout: int = 420) -> subprocess.CompletedProcess:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env_extra or {})}
  result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=REPO)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def _parallel_check(config: str, tfds_dir: str, layouts: str, *overrides: str, steps: int = 8) -> dict:
  result = _python([str(REPO / 'experiments' / 'parallel_check.py'), f'--config={REPO}/experiments/configs/{config}.py',
                    '--num_devices=8', f'--layouts={layouts}', f'--data_dir={RAW_DATA_DIR}', f'--steps={steps}',
                    f"--set=data.tfds_dir='{tfds_dir}'", *(f'--set={o}' for o in overrides)])
  return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_same_run(report: dict, tolerance: float) -> None:
  assert report['devices'] == 8
  for name, layout in report['layouts'].items():
    assert len(layout['losses']) == report['steps']
    assert layout['max_rel_loss_diff'] <= tolerance, (name, layout['max_rel_loss_diff'])
    assert layout['max_abs_state_diff'] <= tolerance, (name, layout['max_abs_state_diff'])


# ----------------------------------------------------------------- one device


def test_rules_shard_each_dim_only_where_the_mesh_axis_exists_and_divides():
  mesh = make_mesh(ml_collections.ConfigDict({'axes': {'data': 1}}))
  table = rules_table(None)
  assert spec_for(('embed', 'mlp'), (6, 8), mesh, table) == P(None, None)  # axes absent from the mesh
  fake = type('FakeMesh', (), {'axis_names': ('fsdp', 'tensor'), 'shape': {'fsdp': 2, 'tensor': 4}})()
  assert spec_for(('embed', 'mlp'), (6, 8), fake, table) == P('fsdp', 'tensor')
  assert spec_for(('conv_height', 'conv_width', 'conv_in', 'conv_out'), (3, 3, 1, 32), fake, table) == \
      P(None, None, None, 'tensor')  # one input channel does not split over fsdp=2
  assert spec_for(('mlp', 'mlp'), (8, 8), fake, table) == P('tensor', None)  # a mesh axis is used once
  assert spec_for(('embed',), (6,), fake, rules_table([('embed', ('fsdp', 'tensor'))])) == P(None)  # 6 % 8
  with pytest.raises(ConfigError, match="unknown mesh axes \\['model'\\]"):
    rules_table([('embed', 'model')])
  with pytest.raises(ConfigError, match='not a pair'):
    rules_table([('embed',)])


def test_mesh_and_strategy_errors_name_the_fix():
  with pytest.raises(ConfigError, match="unknown axes \\['model'\\]; use data, fsdp, tensor"):
    make_mesh(ml_collections.ConfigDict({'axes': {'model': -1}}))
  mesh = make_mesh(ml_collections.ConfigDict({'axes': {'data': 1, 'tensor': 1}}))
  strategies.check('pmap', mesh)  # size-1 model axes are fine
  with pytest.raises(ConfigError, match="use one of: jit, pmap"):
    strategies.check('shard_map', mesh)
  fake = type('FakeMesh', (), {'axis_names': ('data', 'tensor'), 'shape': {'data': 2, 'tensor': 4}})()
  with pytest.raises(ConfigError, match='Use strategy "jit" for FSDP or tensor parallelism'):
    strategies.check('pmap', fake)


def test_distributed_initialize_reads_flags_env_and_clusters():
  assert distributed.initialize(environ={}) is False  # a single process: nothing to start
  with pytest.raises(ConfigError, match='pass --num_processes and --process_id'):
    distributed.initialize('127.0.0.1:1234', environ={})
  with pytest.raises(ConfigError, match='must be in \\[0, 2\\)'):
    distributed.initialize(environ={'ZOO_COORDINATOR_ADDRESS': 'h:1', 'ZOO_NUM_PROCESSES': '2', 'ZOO_PROCESS_ID': '2'})
  assert distributed.cluster_detected({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}) == 'SLURM'
  assert distributed.cluster_detected({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}) is None
  assert distributed.cluster_detected({'OMPI_COMM_WORLD_SIZE': '2'}) == 'Open MPI'
  assert distributed.cluster_detected({'TPU_WORKER_HOSTNAMES': 'a,b'}) == 'multi-host TPU'


def _experiment(mnist_config, **changes):
  config = mnist_config.copy_and_resolve_references()
  config.update(changes)
  return config, build_experiment(config, None)


def test_accumulating_4_microbatches_of_32_equals_one_batch_of_128(mnist_config):
  _, experiment = _experiment(mnist_config)
  batch = experiment.strategy.put_batch(next(experiment.pipeline.train_iterator()))
  state, rng = experiment.state, jax.random.PRNGKey(1)
  grads_for = lambda k, batch: jax.jit(functools.partial(loss_and_grads, task=experiment.task, microbatches=k))(
      state.params, state.model_state, batch, rng)
  grads = {k: grads_for(k, batch) for k in (1, 4)}
  assert batch['image'].shape[0] == 128
  for whole, accumulated in zip(jax.tree.leaves(grads[1]), jax.tree.leaves(grads[4])):
    np.testing.assert_allclose(accumulated, whole, atol=TOLERANCE, rtol=TOLERANCE)
  first_micro = jax.tree.map(lambda x: x[0::4], batch)  # what micro-batch 0 holds
  alone = grads_for(1, first_micro)[0]
  assert not np.allclose(alone['Dense_0']['kernel'], grads[4][0]['Dense_0']['kernel'], atol=TOLERANCE)


def test_bf16_compute_keeps_f32_params_and_optimizer_state(mnist_config):
  config, experiment = _experiment(mnist_config, compute_dtype='bfloat16')
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, experiment.strategy, config)
  batch = experiment.strategy.put_batch(next(experiment.pipeline.train_iterator()))
  state, metrics = train_step(experiment.state, batch)
  dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state)) if leaf.ndim}
  assert dtypes == {jnp.dtype('float32')}
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(metrics['loss'])
  lowered = train_step.lower(state, batch).as_text()
  assert 'bf16' in lowered  # the convolutions and matmuls really run in bf16


@pytest.mark.parametrize('changes, message', [
    (dict(microbatches=3), 'must be a positive integer dividing config.data.batch_size=128'),
    (dict(compute_dtype='int8'), "use one of: float32, bfloat16, float16"),
])
def test_step_options_are_checked_before_any_data_is_read(mnist_config, changes, message):
  config = mnist_config.copy_and_resolve_references()
  config.update(changes)
  config.data.name = 'no_such_dataset'  # would fail later, when the data is prepared
  with pytest.raises(ConfigError, match=message):
    build_experiment(config, None)


# ---------------------------------------------------------- 8 simulated devices


def test_cnn_same_run_on_1_device_8_data_fsdp_2x4_and_pmap_with_accumulation(tfds_dir):
  report = _parallel_check('mnist_cnn', tfds_dir, 'single,data,fsdp_tensor,pmap_accum4')
  _assert_same_run(report, TOLERANCE)
  layouts = report['layouts']
  assert layouts['fsdp_tensor']['mesh'] == {'fsdp': 2, 'tensor': 4}
  dense = layouts['fsdp_tensor']['params']["['Dense_0']['kernel']"]
  assert dense == {'spec': "P('fsdp', 'tensor')", 'shard_shape': [3136 // 2, 256 // 4]}
  assert layouts['data']['params']["['Dense_0']['kernel']"]['spec'] == 'P(None, None)'
  assert layouts['fsdp_tensor']['params']["['Conv_0']['kernel']"]['spec'] == "P(None, None, None, 'tensor')"
  memory = {name: layouts[name]['memory_per_device']['argument'] for name in ('data', 'fsdp_tensor')}
  assert memory['fsdp_tensor'] < memory['data'] / 4, memory


def test_transformer_same_run_on_1_device_fsdp_2x4_and_pmap(tfds_dir, tmp_path):
  for split, source in (('train', 'train'), ('validation', 'dev')):  # the first 2000 real SST-2 sentences
    lines = (RAW_DATA_DIR / 'sst2' / f'{source}.tsv').read_text().splitlines()[:2001]
    (tmp_path / f'{split}.tsv').write_text('\n'.join(lines) + '\n')
  report = _parallel_check('sst2_transformer', tfds_dir, 'single,fsdp_tensor,pmap',
                           "data.name='tsv'", f"data.tsv_dir='{tmp_path}'", 'model.dropout_rate=0.0',
                           'data.vocab_size=2000', 'model.vocab_size=2000', 'data.batch_size=32',
                           'model.num_layers=1')
  _assert_same_run(report, TOLERANCE)
  params = report['layouts']['fsdp_tensor']['params']
  block = "['EncoderBlock_0']"
  assert params[f"{block}['MultiHeadSelfAttention_0']['query']['kernel']"]['spec'] == "P('fsdp', 'tensor', None)"
  assert params[f"{block}['MultiHeadSelfAttention_0']['out']['kernel']"]['spec'] == "P('tensor', None, 'fsdp')"
  assert params[f"{block}['Dense_0']['kernel']"]['spec'] == "P('fsdp', 'tensor')"
  assert params["['Embed_0']['embedding']"]['spec'] == "P('tensor', 'fsdp')"


def test_pmap_averages_batch_norm_statistics_over_devices(tfds_dir):
  report = _parallel_check('mnist_cnn', tfds_dir, 'single,pmap', 'data.batch_size=64',
                           "model={'name': 'resnet', 'stage_sizes': (1, 1), 'widths': (8, 16)}", steps=5)
  _assert_same_run(report, TOLERANCE)  # per-device statistics would change the losses and the running averages


def test_checkpoint_saved_on_8_data_restores_on_2x4_and_on_1_device(tfds_dir, tmp_path):
  result = _python([str(REPO / 'tests' / 'restore_across_meshes.py'), tfds_dir, str(tmp_path)])
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  reports = {r['target']: r for r in map(json.loads, lines)}
  assert set(reports) == {'fsdp2_tensor4', 'single'}
  for report in reports.values():
    assert report['same_values'] and report['same_shardings'], report
  assert reports['fsdp2_tensor4']['dense_kernel_shard_shape'] == [1568, 64]
  assert reports['single']['dense_kernel_shard_shape'] == [3136, 256]


# ------------------------------------------------------------ 2 real processes


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _train_command(tfds_dir: str, workdir, *extra: str) -> list[str]:
  return [str(REPO / 'experiments' / 'train.py'), f'--config={REPO}/experiments/configs/mnist_cnn.py',
          f'--config.data.tfds_dir={tfds_dir}', '--config.num_train_steps=12', '--config.log_every=1',
          '--config.eval_every=12', '--config.checkpoint.every=6', '--config.data.eval_batch_size=500',
          f'--workdir={workdir}', *extra]


@pytest.fixture(scope='module')
def one_process_run(tfds_dir, tmp_path_factory):
  """metrics.jsonl rows of a 12-step single-process run."""
  workdir = tmp_path_factory.mktemp('one_process')
  assert 'test accuracy' in _python(_train_command(tfds_dir, workdir)).stdout
  return read_metrics(workdir / 'metrics.jsonl')


def test_two_processes_train_the_same_run_as_one(tfds_dir, tmp_path, one_process_run):
  address = f'127.0.0.1:{_free_port()}'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  workers = [subprocess.Popen([sys.executable, *_train_command(
      tfds_dir, tmp_path, f'--coordinator_address={address}',
      '--num_processes=2', f'--process_id={index}')], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=REPO) for index in range(2)]
  outputs = [worker.communicate(timeout=300)[0] for worker in workers]
  assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert 'test accuracy' in outputs[0] and 'test accuracy' not in outputs[1]  # one writer prints and logs

  one, two = one_process_run, read_metrics(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in two] == [(r['step'], r['split']) for r in one]  # no duplicate rows
  for a, b in zip(one, two):  # train losses, eval and test metrics over both processes' examples
    assert abs(a['loss'] - b['loss']) <= TOLERANCE * abs(a['loss']), (a, b)
    assert a.get('accuracy') == pytest.approx(b.get('accuracy'), abs=1e-6)
  data_states = sorted(p.name for p in (tmp_path / 'checkpoints' / '12' / 'data').glob('process_*'))
  assert data_states == ['process_0-of-2.json', 'process_1-of-2.json']  # each process saved its own reader
