"""zoo.train.host_memory: the glibc malloc setting applies here and is skipped cleanly elsewhere."""

import ctypes.util
import platform

import pytest

from zoo.train import host_memory


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc\'s')
def test_reuse_freed_host_memory_applies_with_glibc():
  assert host_memory.reuse_freed_host_memory()
  assert host_memory.reuse_freed_host_memory()  # idempotent


def test_reuse_freed_host_memory_reports_false_without_a_c_library(monkeypatch):
  monkeypatch.setattr(ctypes.util, 'find_library', lambda name: 'libno-such-c-library.so.0')
  assert not host_memory.reuse_freed_host_memory()
