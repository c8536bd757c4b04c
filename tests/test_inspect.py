"""Inspection: integrated gradients are complete, saliency is a gradient magnitude, attention maps are
distributions over the real tokens; the launcher writes its PNGs."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from conftest import REPO

from zoo import inspect as zoo_inspect
from zoo.models import TransformerEncoder
from zoo.train.loop import load_run


def test_integrated_gradients_sum_to_the_logit_difference(trained_run):
  config, experiment, state = load_run(trained_run)
  images = jnp.asarray(next(iter(experiment.pipeline.eval_batches(config.data.test_split, 4)))['image'])
  variables = {'params': state.params, **state.model_state}
  logits_fn = lambda x: experiment.model.apply(variables, x, train=False)
  target = logits_fn(images).argmax(-1)
  rise = jnp.take_along_axis(logits_fn(images) - logits_fn(jnp.zeros_like(images)), target[:, None], 1)[:, 0]
  coarse, fine = (zoo_inspect.integrated_gradients(logits_fn, images, target, steps=s) for s in (4, 128))
  fine_gap = np.abs(zoo_inspect.completeness_gap(logits_fn, images, target, fine))
  coarse_gap = np.abs(zoo_inspect.completeness_gap(logits_fn, images, target, coarse))
  assert (fine_gap <= 0.01 * np.abs(rise) + 1e-4).all(), (fine_gap, rise)
  assert fine_gap.max() < coarse_gap.max()  # the midpoint rule converges
  assert fine.shape == images.shape and np.all(np.asarray(fine)[np.asarray(images) == 0] == 0)  # zero-baseline pixels

  saliency = zoo_inspect.saliency(logits_fn, images, target)
  one_hot = jax.grad(lambda x: logits_fn(x[None])[0, target[0]])(images[0])
  np.testing.assert_allclose(saliency[0], np.abs(one_hot), rtol=1e-5, atol=1e-7)


def test_attention_maps_are_distributions_over_real_tokens():
  model = TransformerEncoder(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=3, d_ff=64,
                             head='classify', num_classes=2)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, size=(2, 10)), jnp.int32).at[1, 6:].set(0)
  variables = model.init(jax.random.PRNGKey(0), tokens, train=False)
  maps = zoo_inspect.attention_maps(model, variables, tokens)
  assert len(maps) == 3 and all(m.shape == (2, 4, 10, 10) for m in maps)
  for weights in maps:
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.asarray(weights)[1, :, :, 6:] == 0)  # padding keys get no attention
  plain = model.apply(variables, tokens, train=False)  # sowing changes nothing when not asked for
  np.testing.assert_array_equal(plain, model.apply(variables, tokens, train=False, mutable=['intermediates'])[0])


def test_inspect_launcher_writes_attribution_pngs(trained_run):
  result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'inspect_run.py'), f'--workdir={trained_run}',
                           '--count=3', '--steps=16'], capture_output=True, text=True, check=True, cwd=REPO)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  png = trained_run / 'inspect' / 'attributions.png'
  assert report['files'] == [str(png)] and png.read_bytes()[:4] == b'\x89PNG'
