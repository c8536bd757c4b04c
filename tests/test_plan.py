"""experiments/plan.py and zoo.train.planning: the real train step compiled for a TPU topology on this CPU machine
(libtpu's deviceless compiler) and for fake CPU devices, the figures it reports, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, load_config

os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')  # other test processes may hold libtpu's lock file


from zoo.train import planning  # noqa: E402

needs_libtpu = pytest.mark.skipif(
    sys.platform != 'linux' or not __import__('importlib.util').util.find_spec('libtpu'),
    reason='libtpu (requirements-test.txt, Linux x86-64) compiles for TPU topologies')


def plan_cli(*args: str) -> subprocess.CompletedProcess:
  env = {key: value for key, value in os.environ.items() if key != 'JAX_COMPILATION_CACHE_DIR'}
  env.update(JAX_PLATFORMS='cpu', ALLOW_MULTIPLE_LIBTPU_LOAD='1')
  return subprocess.run([sys.executable, str(REPO / 'experiments' / 'plan.py'), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def tpu_devices(name: str) -> list:
  from jax.experimental import topologies
  return list(topologies.get_topology_desc(platform='tpu', topology_name=name).devices)


@needs_libtpu
def test_plans_the_real_step_on_a_v5e_2x2():
  config = load_config('mnist_cnn')
  config.mesh.axes = {'data': 2, 'fsdp': 2, 'tensor': 1}
  plan = planning.plan(config, tpu_devices('v5e:2x2'), 'v5e:2x2')
  assert plan.chips == 4 and plan.device_kind == 'TPU v5 lite' and plan.mesh == {'data': 2, 'fsdp': 2, 'tensor': 1}
  assert plan.fits and plan.hbm_bytes == 16 * planning.GIB
  assert 0 < plan.params_bytes < plan.total_bytes and plan.optimizer_bytes > 0
  assert 0.8 < plan.xla_flops_per_step / plan.analytic_flops_per_step < 1.25
  assert plan.collectives, 'FSDP and data parallelism need collectives'


@needs_libtpu
def test_remat_and_fsdp_lower_activation_memory_on_tpu():
  """A scanned ViT compiled for v5e:2x2: remat at least halves the temporaries; under FSDP the encoder blocks keep
  activations split over the batch (without that constraint XLA gathered the whole batch onto every chip: 10x the
  data-parallel temporaries; with it about 2x, the gathered weights)."""
  config = load_config('imagenet_vit_b16')
  config.model.update(dict(d_model=128, num_heads=4, num_layers=2, d_ff=512, patch_size=4, num_classes=10))
  config.data.image_size, config.data.batch_size = 32, 256
  temps = {}
  for axis, remat in (('data', 'none'), ('data', 'full'), ('fsdp', 'none')):
    config.model.remat, config.mesh.axes = remat, {'data': 1, 'fsdp': 1, 'tensor': 1, axis: 4}
    temps[axis, remat] = planning.plan(config, tpu_devices('v5e:2x2')).temp_bytes
  assert temps['data', 'full'] < 0.5 * temps['data', 'none'], temps
  assert temps['fsdp', 'none'] < 3 * temps['data', 'none'], temps


@needs_libtpu
def test_a_batch_too_large_does_not_fit_with_its_figures():
  result = plan_cli('--config=mnist_mlp', '--topology=v5e:2x2', '--config.model.widths=(16384,16384)',
                    '--config.data.batch_size=1048576')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'does not fit' in result.stdout and 'of 16.00 GiB HBM' in result.stdout
  assert 'activations/temporaries 44.30 GiB' in result.stdout and 'params 1.05 GiB' in result.stdout
  assert 'the compiler: RESOURCE_EXHAUSTED' in result.stdout


def test_cpu_devices_and_one_line_errors():
  result = plan_cli('--config=mnist_cnn', '--topology=cpu:4', '--mesh=data:2,tensor:2')
  assert result.returncode == 0, result.stderr[-2000:]
  assert "mesh {'data': 2, 'tensor': 2}" in result.stdout and 'XLA' in result.stdout
  bad_mesh = plan_cli('--config=mnist_cnn', '--topology=cpu:4', '--mesh=data:3')
  assert bad_mesh.returncode != 0
  assert bad_mesh.stderr.strip().splitlines()[-1].startswith('error: --mesh=data:3 uses 3 devices')
  assert 'data:2,tensor:2' in bad_mesh.stderr
  bad_topology = plan_cli('--config=mnist_cnn', '--topology=v9x:2x2')
  last = bad_topology.stderr.strip().splitlines()[-1]
  assert bad_topology.returncode != 0 and last.startswith("error: --topology='v9x:2x2' is not known")
  assert 'v5e:16x16' in last and 'cpu:N' in last


def test_search_tries_the_given_meshes_and_micro_batches_and_ranks_them(tmp_path):
  out = tmp_path / 'plans.jsonl'
  result = plan_cli('--config=mnist_mlp', '--topology=cpu:4', '--search', '--meshes=data:4 fsdp:4 data:2,tensor:2',
                    '--microbatches=1,2', f'--output={out}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '6 layouts fit; best first:' in result.stdout
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert {(tuple(sorted(row['mesh'].items())), row['microbatches']) for row in rows} == {
      (mesh, count) for mesh in [(('data', 4),), (('fsdp', 4),), (('data', 2), ('tensor', 2))] for count in (1, 2)}
  assert [row['total_bytes'] for row in rows] == sorted(row['total_bytes'] for row in rows)
  assert rows[0]['command'].startswith('python ') and '--search' in rows[0]['command'] and rows[0]['date']

