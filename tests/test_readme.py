"""The README's "Use a zoo model in your own code" snippet runs and learns."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_readme_snippet_trains_a_zoo_model_without_the_zoo_loop():
  readme = (REPO / 'README.md').read_text()
  section = readme.split('### Use a zoo model in your own code', 1)[1]
  snippet = section.split('```python\n', 1)[1].split('```', 1)[0]
  assert 'zoo.train' not in snippet
  result = subprocess.run([sys.executable, '-c', snippet], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  final_loss = float(result.stdout.split('final loss')[1])
  assert final_loss < 0.2  # ln 2 = 0.69 at chance
