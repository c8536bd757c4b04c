"""Makes a TFDS dataset ready to read: already prepared, built from a local
copy of its raw files (offline), or downloaded by TFDS.

Local raw files are searched, in order, in: the `raw_data_dir` argument (the
launcher's `--data_dir`), `$ZOO_DATA_DIR`, `./data`, `../shared/data`; each
holds one folder per dataset named as TFDS names it (`mnist/`, ...), with the
files in their original distribution format.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import socket
import urllib.parse
from typing import Sequence

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from zoo.data.builders import BUILDERS, LocalFilesMixin
from zoo.errors import ConfigError, DataUnavailableError

RAW_DATA_ENV = 'ZOO_DATA_DIR'
OFFLINE_ENV = 'ZOO_OFFLINE'
DEFAULT_RAW_DATA_DIRS = ('./data', '../shared/data')


def raw_data_dirs(raw_data_dir: str | None = None) -> list[pathlib.Path]:
  """Local raw-data roots in search order (flag, $ZOO_DATA_DIR, defaults)."""
  candidates = [raw_data_dir, os.environ.get(RAW_DATA_ENV), *DEFAULT_RAW_DATA_DIRS]
  return [pathlib.Path(c).expanduser().resolve() for c in candidates if c]


def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
  """The TF-free builder for TFDS dataset `name`, or a ConfigError naming the known ones."""
  if name not in BUILDERS:
    raise ConfigError(
        f'Unknown dataset {name!r}. zoo can prepare: {", ".join(sorted(BUILDERS))}. '
        'Set config.data.name to one of them.')
  return BUILDERS[name]


def _missing_files(folder: pathlib.Path, filenames: Sequence[str]) -> list[str]:
  return [f for f in filenames if not (folder / f).is_file()]


def prepare(name: str, *, raw_data_dir: str | None = None, tfds_dir: str | None = None,
            allow_download: bool | None = None) -> tfds.core.DatasetBuilder:
  """Prepares TFDS dataset `name` as array_record and returns its builder.

  Args:
    name: TFDS dataset name, e.g. 'mnist'.
    raw_data_dir: first folder to search for local raw files (`--data_dir`).
    tfds_dir: where TFDS keeps prepared datasets (None: TFDS's default,
      `$TFDS_DATA_DIR` or ~/tensorflow_datasets).
    allow_download: try TFDS's download when no local copy is found
      (default: yes, unless $ZOO_OFFLINE is set to a non-empty value).

  Raises:
    DataUnavailableError: no local copy, download impossible or failed, or a
      local file whose checksum does not match TFDS's registered one.
  """
  make_builder = functools.partial(builder_class(name), data_dir=tfds_dir, file_format='array_record')
  builder = make_builder()
  if builder.is_prepared():
    return builder
  filenames = list(builder.RAW_FILES.values())
  searched = raw_data_dirs(raw_data_dir)
  incomplete = {}
  local_folder = getattr(builder, 'LOCAL_FOLDER', name)
  manual_only = getattr(builder, 'MANUAL_ONLY', False)  # no public download (imagenet2012)
  folders = [root / local_folder for root in searched]
  if manual_only:  # TFDS's own manual dir comes last
    folders.append(pathlib.Path(builder.data_dir_root) / 'downloads' / 'manual')
  for folder in folders:
    missing = _missing_files(folder, filenames)
    if not missing:
      if isinstance(builder, LocalFilesMixin):
        _verify_sha256(folder, builder.LOCAL_SHA256, builder.URL)
        builder.local_dir = folder
        _download_and_prepare(builder, manual_dir=None)
      else:
        _download_and_prepare(builder, manual_dir=folder)
      return make_builder()  # reads what is on disk, also when another process prepared it
    if len(missing) < len(filenames):
      incomplete[folder] = missing
  download_error = None
  if allow_download is None:
    allow_download = not os.environ.get(OFFLINE_ENV)
  if allow_download and not manual_only:
    try:
      check_reachable(builder.URL)
      _download_and_prepare(builder, manual_dir=None)
      return make_builder()
    except DataUnavailableError:
      raise
    except Exception as error:  # network and HTTP errors take many forms
      download_error = error
  lines = [f'Dataset {name!r} is not prepared in {builder.data_dir} and no local copy of its raw files was found.']
  if download_error is not None:
    lines.append(f'Downloading from {builder.URL} failed (no internet?): '
                 f'{type(download_error).__name__}: {str(download_error)[:300]}')
  for folder, missing in incomplete.items():
    lines.append(f'{folder} is incomplete; missing: {", ".join(missing)}.')
  lines.append(f'Fix: put {", ".join(filenames)} into {searched[0] / local_folder}/ '
               f'(or into <dir>/{local_folder}/ and pass --data_dir=<dir> or set ${RAW_DATA_ENV}'
               + (f', or into TFDS\'s manual dir {folders[-1]}' if manual_only else '') + '). '
               f'Folders searched: {", ".join(str(d) for d in searched)}. '
               f'Originals: {builder.URL}')
  raise DataUnavailableError(' '.join(lines))


def _verify_sha256(folder: pathlib.Path, expected: dict[str, str], origin: str) -> None:
  for filename, checksum in expected.items():
    digest = hashlib.sha256((folder / filename).read_bytes()).hexdigest()
    if digest != checksum:
      raise DataUnavailableError(
          f'{folder / filename} does not match its checksum (sha256 {digest}, expected {checksum}); it is corrupt '
          f'or not the original. Replace it with the original (source: {origin}).')


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
  """Raises OSError quickly when `url`'s host cannot be reached.

  TFDS retries a failing download for minutes; this turns "no internet" into
  an immediate, explained error.
  """
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
    pass


def _download_and_prepare(builder: tfds.core.DatasetBuilder, manual_dir: pathlib.Path | None) -> None:
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except FileExistsError:
    # Another process (a second run, a test worker) prepared the same dataset meanwhile: TFDS
    # writes into a temporary folder and renames it at the end, and the later rename fails.
    # The dataset in place is complete and built from the same files.
    if not builder.is_prepared():
      raise
  except NonMatchingChecksumError as error:
    where = f'in {manual_dir}' if manual_dir else 'downloaded'
    raise DataUnavailableError(
        f'A raw file of {builder.name!r} {where} does not match its TFDS checksum; it is corrupt or not '
        f'the original. Replace it with the original from {builder.URL}. {" ".join(str(error).split())}') from error
