"""Compiles a config's train step for a device topology it does not have, and says whether it fits.

  python experiments/plan.py --config=experiments/configs/imagenet_resnet50.py --topology=v5e:4x4
  python experiments/plan.py --config=imagenet_vit_b16 --topology=v5e-256 --search
  python experiments/plan.py --config=mnist_cnn --topology=cpu:8 --mesh=data:4,tensor:2

TPU topologies compile through libtpu's deviceless compiler (pip install libtpu, Linux x86-64; see
docs/planning.md) on any machine; cpu:N uses N fake CPU devices. Prints per chip: params and optimizer
state, activations/temporaries, the total against the chip's HBM, whether it fits, XLA's flops per step
against the analytic count, the collectives and their bytes, compile time, and XLA's own step-time and
MFU estimate. --search ranks mesh splits x remat policies x micro-batch counts that fit. --output appends
each plan as a JSON line.
"""

from __future__ import annotations

import json
import os
import re
import sys

from zoo import platforms

TPU_ALIASES = {
    'v4-8': 'v4:2x2x1', 'v4-16': 'v4:2x2x2', 'v4-32': 'v4:2x2x4', 'v4-64': 'v4:2x4x4', 'v4-128': 'v4:4x4x4',
    'v5e-4': 'v5e:2x2', 'v5e-8': 'v5e:2x4', 'v5e-16': 'v5e:4x4', 'v5e-32': 'v5e:4x8', 'v5e-64': 'v5e:8x8',
    'v5e-128': 'v5e:8x16', 'v5e-256': 'v5e:16x16', 'v5p-8': 'v5p:2x2x1', 'v5p-16': 'v5p:2x2x2',
    'v5p-32': 'v5p:2x2x4', 'v5p-64': 'v5p:2x4x4', 'v5p-128': 'v5p:4x4x4', 'v6e-4': 'v6e:2x2', 'v6e-16': 'v6e:4x4',
    'v6e-64': 'v6e:8x8', 'v6e-256': 'v6e:16x16',
}
VALID = ('cpu:N (N fake CPU devices), a TPU topology GEN:AxB[xC] with GEN v4, v5e, v5p or v6e '
         '(e.g. v5e:2x2, v5e:4x4, v5e:16x16, v5p:2x4x4, v4:2x2x4; 2-D for v5e/v6e, 3-D for v4/v5p, '
         f'at least 2x2), or a slice name: {", ".join(TPU_ALIASES)}')

if not platforms.has_accelerator_files():
  # Deviceless compiles touch no chip, and other processes may hold libtpu's lock file.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  # libtpu looks for this host's own chips at load and prints a screen of errors when it cannot name them; the
  # topology compiled for comes from get_topology_desc, whatever these say (same figures with or without them).
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', 'v5litepod-4')
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from zoo import benchmarking  # noqa: E402
from zoo.cli.configs import resolve_config_flag  # noqa: E402
from zoo.errors import ConfigError  # noqa: E402
from zoo.train import planning  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A shipped config\'s name or a config file.',
                                          lock_config=False)
_TOPOLOGY = flags.DEFINE_string('topology', 'v5e:2x2', f'Devices to compile for: {VALID}.')
_MESH = flags.DEFINE_string('mesh', None, 'Mesh axes, e.g. data:4,fsdp:2,tensor:2 (default: the config\'s).')
_SEARCH = flags.DEFINE_bool('search', False,
                            'Try mesh splits x remat policies x micro-batch counts; rank those that fit.')
_REMATS = flags.DEFINE_list('remats', ['none', 'full'], 'Remat policies --search tries (models with a remat option).')
_MICROBATCHES = flags.DEFINE_list('microbatches', ['1', '4'], 'Micro-batch counts --search tries.')
_MESHES = flags.DEFINE_string('meshes', None, 'Mesh splits --search tries, space-separated, each as --mesh '
                              '(e.g. "data:16 fsdp:16 data:8,tensor:2"; default: every data x fsdp x tensor split).')
_OUTPUT = flags.DEFINE_string('output', None, 'Append each plan as a JSON line to this file.')
flags.mark_flags_as_required(['config'])


def devices_for(topology: str) -> list:
  """The devices `topology` names; ConfigError listing the valid choices when it names none."""
  topology = TPU_ALIASES.get(topology, topology)
  if match := re.fullmatch(r'cpu:(\d+)', topology):
    jax.config.update('jax_num_cpu_devices', int(match.group(1)))
    return jax.devices('cpu')
  if re.fullmatch(r'(h100|a100|gpu)(:\d+)?', topology):
    raise ConfigError(f'--topology={topology}: deviceless GPU compilation is not supported here (it needs the CUDA '
                      'PJRT plugin and an H100 target description; docs/planning.md); use a TPU topology or cpu:N.')
  if not re.fullmatch(r'(v4|v5p):\d+x\d+x\d+|(v5e|v6e):\d+x\d+', topology):
    raise ConfigError(f'--topology={topology!r} is not known; use {VALID}.')
  from jax.experimental import topologies
  try:
    # v4 and v5p chips hold two TensorCores; as one device each ('megacore'), as jax.make_mesh needs.
    extra = {'chip_config_name': 'megacore'} if topology.startswith(('v4', 'v5p')) else {}
    return list(topologies.get_topology_desc(platform='tpu', topology_name=topology, **extra).devices)
  except (RuntimeError, ValueError) as error:
    raise ConfigError(f'--topology={topology!r}: {str(error).splitlines()[0]}; use {VALID}.') from error


def parse_mesh(text: str, chips: int) -> dict[str, int]:
  """'data:4,tensor:2' -> {'data': 4, 'tensor': 2}; ConfigError naming the valid splits when it does not fit `chips`."""
  try:
    axes = {name: int(size) for name, size in (part.split(':') for part in text.split(','))}
  except ValueError as error:
    raise ConfigError(f'--mesh={text!r}: write axis:size pairs, e.g. data:4,fsdp:2,tensor:2.') from error
  product = 1
  for size in axes.values():
    product *= size
  if product != chips:
    examples = ', '.join(','.join(f'{k}:{v}' for k, v in split.items() if v > 1) or f'data:{chips}'
                         for split in planning.mesh_splits(chips)[:6])
    raise ConfigError(f'--mesh={text} uses {product} devices but the topology has {chips} chips; use sizes '
                      f'multiplying to {chips}, e.g. {examples}.')
  return axes


def describe(plan: planning.Plan) -> str:
  gib = lambda n: f'{n / planning.GIB:.2f} GiB'
  fit = 'fits' if plan.fits else 'does not fit'
  hbm = f'of {gib(plan.hbm_bytes)} HBM: {fit}' if plan.hbm_bytes else '(HBM unknown)'
  ratio = plan.xla_flops_per_step / plan.analytic_flops_per_step if plan.analytic_flops_per_step else float('nan')
  lines = [
      f'{plan.topology}: {plan.chips} x {plan.device_kind}, mesh {plan.mesh}, batch {plan.batch_size} in '
      f'{plan.microbatches} micro-batch(es), remat {plan.remat}, compute {plan.compute_dtype}',
      f'  per chip: params {gib(plan.params_bytes)} + optimizer state {gib(plan.optimizer_bytes)}; '
      f'activations/temporaries {gib(plan.temp_bytes)}; total {gib(plan.total_bytes)} {hbm}',
      f'  flops per step: XLA {plan.xla_flops_per_step:.3e} ({plan.xla_flops_per_chip:.3e} per chip), analytic '
      f'{plan.analytic_flops_per_step:.3e} (XLA/analytic {ratio:.2f})',
      '  collectives (each op once, loops not unrolled): ' + (', '.join(
          f'{op} x{v["count"]} {v["bytes"] / 2**20:.1f} MiB' for op, v in plan.collectives.items()) or 'none'),
      f'  compile {plan.compile_s:.1f} s' + (
          f'; XLA\'s estimate: {plan.xla_estimated_step_s * 1e3:.1f} ms per step, MFU '
          f'{plan.xla_estimated_mfu:.0%}' + (' (over 100%: XLA counts a loop body once, see docs/planning.md)'
                                              if plan.xla_estimated_mfu > 1 else '')
          if plan.xla_estimated_step_s and plan.xla_estimated_mfu else
          '; no step-time estimate from XLA for this backend'),
  ]
  if plan.compiler_message:  # the TPU compiler refused the program: no flops, collectives or timing
    lines[2:] = [f'  the compiler: {plan.compiler_message}', f'  compile {plan.compile_s:.1f} s']
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  jax.config.update('jax_enable_compilation_cache', False)  # deviceless executables cannot be cached
  try:
    devices = devices_for(_TOPOLOGY.value)
    if _MESH.value:
      config.mesh.axes = parse_mesh(_MESH.value, len(devices))
    if _SEARCH.value:
      splits = [parse_mesh(text, len(devices)) for text in _MESHES.value.split()] if _MESHES.value else None
      plans = planning.search(config, devices, _TOPOLOGY.value, remats=_REMATS.value,
                              microbatches=[int(m) for m in _MICROBATCHES.value], splits=splits,
                              log=lambda text: print(text, flush=True))
      print(f'{len(plans)} layouts fit; best first:' if plans else 'No layout tried fits.')
    else:
      plans = [planning.plan(config, devices, _TOPOLOGY.value)]
  except ConfigError as error:
    sys.exit(f'error: {error}')
  for plan in plans:
    print(describe(plan))
    if _OUTPUT.value:
      with open(_OUTPUT.value, 'a') as f:
        f.write(json.dumps({'config': _config_name(), **plan.row(), **benchmarking.provenance()}) + '\n')


def _config_name() -> str:
  """The --config value as given."""
  return next((arg.split('=', 1)[1] for arg in sys.argv if arg.startswith('--config=')), '')


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: flags.FLAGS(resolve_config_flag(argv)))
