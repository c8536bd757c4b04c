"""Turning SIGTERM/SIGINT into a save at the next step boundary."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Records SIGTERM/SIGINT instead of dying; `should_stop()` says when to save and exit.

  In multi-process runs every process gets the same answer (an all-gather of
  the flags), so all stop at the same step. A second SIGINT interrupts at once.
  Use as a context manager: the previous handlers come back on exit.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self) -> 'PreemptionWatcher':
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    if self.received == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signum

  def should_stop(self) -> bool:
    """True once any process received a signal (a collective call when there are several)."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))
