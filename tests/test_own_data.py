"""Your own text data (name='tsv'): the README's command, line endings, labels, and one line for each bad file."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import REPO
from test_train import tree_digest

from zoo.config import default_config
from zoo.data.pipeline import build_pipeline, read_tsv_splits
from zoo.errors import ConfigError, DataUnavailableError
from zoo.train.loop import train_and_evaluate

NEL = '\u0085'
REVIEWS = [('a gripping' + NEL + 'film, truly', 'pos'), ('dull and long', 'neg'), ('great fun', 'pos'),
           ('awful' + NEL + ' plot', 'neg'), ('fun but long', 'pos'), ('long and awful', 'neg')]


def write_tsv(folder, split: str, rows, *, newline: str = '\r\n', header: str = 'sentence\tlabel') -> None:
  folder.mkdir(parents=True, exist_ok=True)
  lines = [header] + [f'{sentence}\t{label}' for sentence, label in rows]
  (folder / f'{split}.tsv').write_bytes(''.join(line + newline for line in lines).encode('utf-8'))


def reviews_folder(tmp_path):
  folder = tmp_path / 'reviews'
  write_tsv(folder, 'train', REVIEWS)
  write_tsv(folder, 'validation', REVIEWS[:3])
  return folder


def tiny_config(folder) -> ml_collections.ConfigDict:
  """sst2's data section on your own files, with a small LSTM and a short run."""
  config = default_config('glue/sst2')
  config.data.update(dict(name='tsv', tsv_dir=str(folder), batch_size=2, eval_batch_size=3, max_length=8))
  config.model = ml_collections.ConfigDict(dict(name='rnn_classifier', vocab_size=64, embed_dim=8, hidden=8))
  config.task.input_key = 'tokens'
  config.num_train_steps = 3
  config.log_every = config.eval_every = config.checkpoint.every = 3
  return config


def test_nel_crlf_and_label_names_are_read_as_written(tmp_path):
  folder = reviews_folder(tmp_path)
  columns, names, largest = read_tsv_splits(str(folder), ['train', 'validation'])
  assert names == ['neg', 'pos']  # sorted: neg -> 0, pos -> 1
  assert [s.decode() for s in columns['train']['sentence']] == [s for s, _ in REVIEWS]  # NEL inside, no \r
  np.testing.assert_array_equal(columns['train']['label'], [1, 0, 1, 0, 1, 0])
  assert largest.endswith('train.tsv:2')


def test_label_names_are_saved_with_the_run_and_checked_on_resume(tmp_path):
  folder = reviews_folder(tmp_path)
  config = tiny_config(folder).data
  config.vocab_size = 2  # only <pad> and <unk>: the vocabulary stays the same when the labels change
  build_pipeline(config, seed=0, workdir=tmp_path / 'run')
  assert json.loads((tmp_path / 'run' / 'labels.json').read_text()) == ['neg', 'pos']
  assert (tmp_path / 'run' / 'vocab.json').exists()
  before = tree_digest(tmp_path / 'run')
  write_tsv(folder, 'train', REVIEWS + [('so so', 'mixed')])
  with pytest.raises(ConfigError, match=r'labels.json \(2 labels\) differs from the label names built now '
                                        r'\(3 labels: mixed, neg, pos\).*new --workdir'):
    build_pipeline(config, seed=0, workdir=tmp_path / 'run')
  assert tree_digest(tmp_path / 'run') == before


# (what to write into train.tsv as raw bytes, the words of the one-line error)
BAD_FILES = [
    (b'', r'train.tsv is empty; it needs the header sentence<TAB>label'),
    (b'sentence\tlabel\r\n', r'train.tsv has the header but no examples'),
    (b'text,label\nfun,1\n', r'train.tsv:1: the first line is .*must be the header sentence<TAB>label'),
    (b'sentence\tlabel\ngood\t1\nbad\t0\tx\n', r'train.tsv:3: 3 tab-separated columns; every line needs exactly two'),
    (b'sentence\tlabel\ngood\t1\nbad\t-1\n', r'train.tsv:3: label -1 is negative'),
    (b'sentence\tlabel\ngood\t1\nbad\t\n', r'train.tsv:3: the label is empty'),
    (b'sentence\tlabel\ngood\t1\n\nna\xffve\t0\n', r"train.tsv:4: byte b'\\xff' is not UTF-8; save the file as UTF-8"),
]


@pytest.mark.parametrize('content,words', BAD_FILES, ids=[w.split(' ', 1)[1][:30] for _, w in BAD_FILES])
def test_each_bad_file_gets_one_line_naming_file_and_line(content, words, tmp_path):
  folder = tmp_path / 'reviews'
  write_tsv(folder, 'validation', [('good', '1')])
  (folder / 'train.tsv').write_bytes(content)
  with pytest.raises(DataUnavailableError, match=words) as raised:
    read_tsv_splits(str(folder), ['train', 'validation'])
  assert '\n' not in str(raised.value)


def test_a_label_name_missing_from_train_and_a_missing_dir_are_named(tmp_path):
  folder = reviews_folder(tmp_path)
  write_tsv(folder, 'validation', [('meh', 'neutral')])
  with pytest.raises(DataUnavailableError, match=r"validation.tsv:2: label 'neutral' does not occur in train.tsv"):
    read_tsv_splits(str(folder), ['train', 'validation'])
  with pytest.raises(ConfigError, match=r"name='tsv' needs --config.data.tsv_dir=DIR"):
    read_tsv_splits(None, ['train', 'validation'])
  with pytest.raises(DataUnavailableError, match=r'validation.tsv is missing.*train_split, eval_split and test_split'):
    (folder / 'validation.tsv').unlink()
    read_tsv_splits(str(folder), ['train', 'validation'])


def test_labels_beyond_the_models_classes_are_refused_before_training(tmp_path):
  folder = tmp_path / 'numbered'
  write_tsv(folder, 'train', [('good', '1'), ('bad', '0'), ('so so', '2')], newline='\n')
  write_tsv(folder, 'validation', [('good', '1')], newline='\n')
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match=r'train.tsv:4: label 2 is out of range for config.model.num_classes=2; '
                                        r'set --config.model.num_classes=3'):
    train_and_evaluate(tiny_config(folder), str(workdir))
  assert not (workdir / 'checkpoints').exists() or not any((workdir / 'checkpoints').iterdir())
  names = reviews_folder(tmp_path)
  write_tsv(names, 'train', REVIEWS + [('meh', 'neutral')])
  with pytest.raises(ConfigError, match=r"label 'pos' \(id 2\) is out of range .*num_classes=3"):
    train_and_evaluate(tiny_config(names), str(tmp_path / 'run2'))


def test_data_longer_than_the_models_table_fails_before_reading_data(tmp_path):
  config = tiny_config(tmp_path / 'nowhere')
  config.model = ml_collections.ConfigDict(dict(name='transformer', vocab_size=64, d_model=8, num_heads=2,
                                                num_layers=1, d_ff=8, max_len=16))
  config.data.max_length = 32
  with pytest.raises(ConfigError, match=r'max_length=32 exceeds config.model.max_len=16.*--config.model.max_len=32'):
    train_and_evaluate(config, str(tmp_path / 'run'))


def test_the_readme_command_trains_on_a_tsv_with_nel_string_labels_and_crlf(tmp_path):
  readme = (REPO / 'README.md').read_text()
  [command] = re.findall(r'`(--config\.data\.name=tsv\s+--config\.data\.tsv_dir=DIR)`', readme)
  folder = reviews_folder(tmp_path)
  args = command.replace('DIR', str(folder)).split()
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, 'experiments/train.py', '--config=experiments/configs/sst2_lstm.py', f'--workdir={workdir}',
       *args, '--config.data.batch_size=2', '--config.data.eval_batch_size=3', '--config.num_train_steps=2',
       '--config.model.hidden=8', '--config.model.embed_dim=8', '--config.model.num_layers=1',
       '--config.task.adversarial_epsilon=0.0', '--config.cpu_single_malloc_arena=False'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'test accuracy' in result.stdout
  assert json.loads((workdir / 'labels.json').read_text()) == ['neg', 'pos']
  assert json.loads((workdir / 'config.json').read_text())['data']['tsv_dir'] == str(folder)
