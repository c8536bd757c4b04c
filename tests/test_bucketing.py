"""Length-bucketed text batches: similar lengths, order a function of (seed, epoch), resumable, cut to the longest."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data.bucketing import LengthBuckets, token_lengths
from zoo.data.pipeline import ArraySource, Pipeline
from zoo.errors import ConfigError

N, T, B = 240, 64, 16


def text_source(seed: int = 0) -> ArraySource:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, N)
  tokens = np.zeros((N, T), np.int32)
  for row, length in enumerate(lengths):
    tokens[row, :length] = rng.integers(2, 50, length)
  return ArraySource({'tokens': tokens, 'label': np.arange(N) % 2})


def bucketed(source, seed=3, **kwargs) -> Pipeline:
  return Pipeline({'train': source}, 'train', B, seed=seed, bucket_by_length=True, **kwargs)


def test_order_depends_only_on_seed_and_epoch_and_covers_each_example_once():
  lengths = token_lengths(text_source().columns['tokens'])
  plan = LengthBuckets(lengths, B, seed=3)
  again = LengthBuckets(lengths, B, seed=3)
  np.testing.assert_array_equal(plan.epoch_plan(0), again.epoch_plan(0))
  assert not np.array_equal(plan.epoch_plan(0), plan.epoch_plan(1))
  assert not np.array_equal(plan.epoch_plan(0), LengthBuckets(lengths, B, seed=4).epoch_plan(0))
  epoch = plan.epoch_plan(1)
  assert len(np.unique(epoch)) == epoch.size == (N // B) * B
  np.testing.assert_array_equal(plan(N // B + 2), epoch[2])  # global batch number -> (epoch 1, batch 2)
  spread = np.mean([np.ptp(lengths[batch]) for batch in epoch])
  random_spread = np.mean([np.ptp(lengths[batch]) for batch in np.arange(N // B * B).reshape(-1, B)])
  assert spread < random_spread / 3


def test_batches_are_cut_to_their_longest_example_and_resume_exactly():
  source = text_source()
  iterator = bucketed(source).train_iterator()
  seen = [next(iterator) for _ in range(20)]  # more than an epoch (15 batches)
  for batch in seen:
    width = batch['tokens'].shape[1]
    assert width % 8 == 0 and width <= T and batch['tokens'].dtype == np.int32
    assert (token_lengths(batch['tokens']) <= width).all() and token_lengths(batch['tokens']).max() > width - 8
  assert len({b['tokens'].shape[1] for b in seen}) > 2
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  resumed = bucketed(source).train_iterator()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
    np.testing.assert_array_equal(got['label'], want['label'])
  first = next(bucketed(source).train_iterator())
  np.testing.assert_array_equal(first['tokens'], seen[0]['tokens'])


def test_processes_cut_their_rows_to_the_same_length():
  source = text_source()
  halves = [next(bucketed(source, process_index=p, process_count=2).train_iterator()) for p in (0, 1)]
  whole = next(bucketed(source).train_iterator())
  np.testing.assert_array_equal(np.concatenate([h['tokens'] for h in halves]), whole['tokens'])


def test_bucketing_needs_text():
  images = ArraySource({'image': np.zeros((32, 4, 4, 1), np.uint8), 'label': np.zeros(32, np.int64)})
  with pytest.raises(ConfigError, match='bucket_by_length needs a text classification dataset'):
    bucketed(images).train_iterator()


def test_a_bucketed_text_run_trains_and_resumes(tmp_path):
  from test_own_data import reviews_folder, tiny_config

  from zoo.train.loop import train_and_evaluate
  config = tiny_config(reviews_folder(tmp_path))
  config.data.bucket_by_length = True
  config.checkpoint.every = 2
  assert train_and_evaluate(config, str(tmp_path / 'run'))['step'] == 3
  config.num_train_steps = 5
  assert train_and_evaluate(config, str(tmp_path / 'run'))['step'] == 5
