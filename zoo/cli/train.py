"""Trains a zoo config and prints its test accuracy (`zoo-train`, `python experiments/train.py`).

  zoo-train --config=mnist_cnn --workdir=runs/mnist_cnn \
      [--config.optimizer.learning_rate=0.05] [--data_dir=/path/to/raw/data]

--config takes a shipped config's name (zoo.configs: experiments/configs in a
checkout) or the path of any config file (a .py with get_config()); either may
end in `:ARG`, passed to get_config.
Re-running with the same --workdir resumes from its latest checkpoint. Several
processes (hosts) train one run when each is started with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I and the same
--workdir on a shared file system; the mesh then spans every process's devices.
"""

from __future__ import annotations

import ast
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from zoo.cli.configs import resolve_config_flag, shipped_configs
from zoo.errors import UserError
from zoo.parallel import distributed
from zoo.train.host_memory import prepare_host_malloc
from zoo.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A shipped config\'s name (mnist_cnn) or a config file (a .py with get_config()).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder: config, metrics, TensorBoard events, checkpoints.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files, one sub-folder per dataset '
                                '(searched before $ZOO_DATA_DIR, ./data, ../shared/data).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Multi-process runs: host:port of process 0 '
                                   '(or $ZOO_COORDINATOR_ADDRESS; SLURM, Open MPI and TPU pods are detected).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process\'s index.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors, also for unknown --config.* keys; --config may name a shipped config."""
  try:
    argv = flags.FLAGS(resolve_config_flag(argv))
    _CONFIG.value.keys()  # a config file that failed to load raises here rather than in main
    return argv
  except OSError as error:
    sys.exit(f'FATAL Flags parsing error: cannot load the --config file: {" ".join(str(error).split())}; '
             f'pass a config file\'s path or one of: {", ".join(shipped_configs())}.')
  except flags.Error as error:
    sys.exit(f'FATAL Flags parsing error: {error}')
  except SyntaxError as error:
    sys.exit(f'FATAL Flags parsing error: the --config file {error.filename}:{error.lineno} has a syntax error '
             f'({error.msg}); fix that line.')
  except (KeyError, AttributeError) as error:
    sys.exit(f'FATAL Flags parsing error: {_unknown_key_message(error)}')


def _unknown_key_message(error: KeyError | AttributeError) -> str:
  """"unknown config key 'x' (did you mean "y"?) ..." from ml_collections' KeyError (its text: quotes, a newline)."""
  text = str(error.args[0] if error.args else error)
  while text[:1] in ('"', "'"):  # a KeyError's text wrapped in its repr, once or more
    try:
      text = str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
      break
  key, _, hint = text.partition('\n')
  key = key if key[:1] in ('"', "'") else repr(key)
  hint = f' ({hint.strip().rstrip("?").replace("Did you mean", "did you mean")}?)' if hint.strip() else ''
  return (f'unknown config key {key.strip()}{hint} in a --config.* override; the config file lists the valid keys.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.ERROR)  # zoo's own warnings are printed; library chatter is not
  prepare_host_malloc(_CONFIG.value)  # before JAX starts its threads
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value, raw_data_dir=_DATA_DIR.value)
  except UserError as error:
    sys.exit(f'error: {error}')
  if result.get('preempted'):
    print(f'Interrupted at step {result["step"]}: saved {result["checkpoint"]}. '
          'Resume with the same command.')
    return
  metrics = {k: v for k, v in result.items() if k not in ('step', 'wall_s', 'skipped_steps')}
  shown = ', '.join(f'{k}: {100 * v:.2f}%' if k == 'accuracy' else f'{k}: {v:.4f}'
                    for k, v in sorted(metrics.items(), key=lambda kv: kv[0] != 'accuracy'))
  if jax.process_index() != 0:
    return
  print(f'test {shown}  ({result["step"]} steps, {result["wall_s"]:.0f} s) -> {_WORKDIR.value}')


def run() -> None:
  """Entry point of the `zoo-train` command."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
