"""Which JAX backends a process starts: CPU alone on machines without accelerators when libtpu is installed.

With libtpu installed (for the planner's deviceless TPU compilation), JAX's default start probes for
TPU chips: on a machine without them that prints a screen of errors, and the first process takes
libtpu's lock file (/tmp/libtpu_lockfile), so a second one cannot load libtpu. `choose()` sets
JAX_PLATFORMS=cpu only when it is unset, libtpu is installed and the machine has no accelerator
device files (TPU: /dev/accel*, /dev/vfio; GPU: /dev/nvidia*, /dev/kfd), so users with a GPU or TPU get
JAX's own choice.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

ACCELERATOR_FILES = ('/dev/accel*', '/dev/vfio', '/dev/nvidia[0-9]*', '/dev/kfd')


def has_accelerator_files() -> bool:
  """Whether the machine shows TPU or GPU device files."""
  return any(glob.glob(pattern) for pattern in ACCELERATOR_FILES)


def choose() -> str | None:
  """Sets JAX_PLATFORMS to 'cpu' where the TPU probe can only fail (see the module doc); returns what it set."""
  if os.environ.get('JAX_PLATFORMS') or has_accelerator_files() or importlib.util.find_spec('libtpu') is None:
    return None
  os.environ['JAX_PLATFORMS'] = 'cpu'
  if 'jax' in sys.modules:  # imported before zoo: its config read the environment already
    sys.modules['jax'].config.update('jax_platforms', 'cpu')
  return 'cpu'
