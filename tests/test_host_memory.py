"""zoo.train.host_memory: the glibc malloc settings apply here, do what they say, and are skipped cleanly elsewhere."""

import ctypes.util
import pathlib
import platform
import subprocess
import sys
import types

import pytest

from zoo.config import default_config
from zoo.train import host_memory


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc\'s')
def test_reuse_freed_host_memory_applies_with_glibc():
  assert host_memory.reuse_freed_host_memory()
  assert host_memory.reuse_freed_host_memory()  # idempotent


def test_reuse_freed_host_memory_reports_false_without_a_c_library(monkeypatch):
  monkeypatch.setattr(ctypes.util, 'find_library', lambda name: 'libno-such-c-library.so.0')
  assert not host_memory.reuse_freed_host_memory()


_LARGE_THREAD_ALLOCATIONS = r'''
import ctypes, ctypes.util, resource, sys, threading
from zoo.train import host_memory
if sys.argv[1] == 'one-arena':
  assert host_memory.use_one_malloc_arena()
assert host_memory.reuse_freed_host_memory()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size, faults = 100 << 20, []  # above the 64 MiB cap of a thread arena's heaps

def allocate_and_touch(times):
  for _ in range(times):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

worker = threading.Thread(target=allocate_and_touch, args=(3,))
worker.start()
worker.join()
print(max(faults[1:]))  # page faults of a repeated allocation, the first one excluded
'''


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc\'s')
@pytest.mark.parametrize('arenas', ['per-thread', 'one-arena'])
def test_one_arena_keeps_a_threads_large_blocks_in_the_heap(arenas):
  from conftest import REPO  # pylint: disable=import-outside-toplevel
  child = subprocess.run([sys.executable, '-c', _LARGE_THREAD_ALLOCATIONS, arenas], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
  page_faults = int(child.stdout.split()[-1])
  if arenas == 'one-arena':
    assert page_faults < 100  # reused from the heap
  elif '[always]' not in _transparent_huge_pages():
    assert page_faults > 20000  # mapped anew each time: 25600 pages of 4 KiB


def _transparent_huge_pages() -> str:
  try:
    return pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled').read_text()
  except OSError:
    return ''


def test_prepare_host_malloc_follows_the_config_and_skips_accelerator_hosts(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, 'use_one_malloc_arena', lambda: calls.append('one arena'))
  monkeypatch.setattr(host_memory, 'reuse_freed_host_memory', lambda: calls.append('reuse'))
  monkeypatch.setattr(host_memory, 'will_run_on_cpu', lambda: True)
  config = default_config('mnist')
  host_memory.prepare_host_malloc(config)
  assert calls == ['reuse']
  config.cpu_single_malloc_arena = True
  host_memory.prepare_host_malloc(config)
  assert calls == ['reuse', 'one arena', 'reuse']
  config.cpu_reuse_host_memory = False
  host_memory.prepare_host_malloc(config)
  monkeypatch.setattr(host_memory, 'will_run_on_cpu', lambda: False)
  config.cpu_reuse_host_memory = True
  host_memory.prepare_host_malloc(config)
  assert calls == ['reuse', 'one arena', 'reuse']


@pytest.mark.parametrize('platforms, plugins, on_cpu', [
    (None, [], True), (None, ['cuda'], False), ('cpu', ['cuda'], True), ('cuda,cpu', [], False)])
def test_will_run_on_cpu_reads_jax_platforms_then_the_installed_plugins(monkeypatch, platforms, plugins, on_cpu):
  monkeypatch.setattr(host_memory, 'jax', types.SimpleNamespace(config=types.SimpleNamespace(jax_platforms=platforms)))
  monkeypatch.setattr(host_memory, '_accelerator_plugins', lambda: plugins)
  assert host_memory.will_run_on_cpu() is on_cpu
