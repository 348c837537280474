"""On-disk caches of halos_jax.data: where they live and how files are written atomically.

Every cache file is written to a temporary file in the same folder and moved into place with
`os.replace`, so a reader (another process, or this one after a crash) sees either no file or a
complete one, never a partial write. Two processes filling the same entry at once both succeed;
the last rename wins and both files are identical in content or equally valid.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Callable, Iterator

import numpy as np

DEFAULT_CACHE_DIR = "~/.cache/halos_jax"


def resolve_cache_dir(cache_dir: str) -> pathlib.Path:
  """The cache folder for `config.data.cache_dir` ('' = ~/.cache/halos_jax), created if needed."""
  folder = pathlib.Path(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR))
  folder.mkdir(parents=True, exist_ok=True)
  return folder


@contextlib.contextmanager
def atomic_path(path: pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields a temporary path next to `path`; renames it to `path` if the block succeeds."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  tmp_path = pathlib.Path(tmp)
  try:
    yield tmp_path
    with open(tmp_path, "rb+") as f:  # the bytes reach the disk before the rename publishes them
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  finally:
    tmp_path.unlink(missing_ok=True)


def atomic_write(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
  """Calls `write(tmp_path)` and publishes the result at `path` atomically."""
  with atomic_path(path) as tmp:
    write(tmp)


def save_array(path: pathlib.Path, array: np.ndarray) -> None:
  """Writes `array` as a .npy file at `path`, atomically."""

  def write(tmp: pathlib.Path) -> None:
    with open(tmp, "wb") as f:
      np.save(f, array, allow_pickle=False)

  atomic_write(path, write)


def load_array(path: pathlib.Path) -> np.ndarray | None:
  """The .npy array at `path`, or None if it is missing or unreadable (then it is rebuilt)."""
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError):
    return None
