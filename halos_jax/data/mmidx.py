"""The Megatron/GPT-NeoX "MMIDIDX" indexed dataset (`.idx` + `.bin`), read through numpy memmap.

This is the format of the pre-tokenised, pre-shuffled Pile that Pythia (and the HALoS reference)
trains on (docs/algorithms.md 4). A dataset is a pair of files sharing a prefix:

`<prefix>.idx`, little-endian:

  offset  size        field
  0       9           magic b'MMIDIDX\\x00\\x00'
  9       8  (u64)    version, 1
  17      1  (u8)     dtype code of the tokens (table below)
  18      8  (u64)    N, number of sequences (index entries)
  26      8  (u64)    D, number of document-index entries
  34      4 N (i32)   sizes: tokens in each sequence
  34+4N   8 N (i64)   pointers: byte offset of each sequence in the .bin
  34+12N  8 D (i64)   document index: sequence index where each document starts, plus the
                      end (writers start it with 0 and append one entry per document, so
                      D = documents + 1)

  Megatron-Core may append one int8 "mode" per sequence (multimodal data); bytes after the
  document index are ignored.

`<prefix>.bin`: the tokens of all sequences, each at its pointer.

Dtype codes (Megatron-LM `megatron/core/datasets/indexed_dataset.py` DType enum and GPT-NeoX
`megatron/data/indexed_dataset.py` `dtypes` agree on 1-5 and 8):

  1 uint8   2 int8   3 int16   4 int32   5 int64   8 uint16

Codes 6 and 7 are floating-point types and are rejected: 6 is float64 in both code bases, 7 is
float32 in Megatron-Core but float64 (np.double) in GPT-NeoX/fairseq, and neither can hold token
ids. The Pythia Pile files use code 8 (uint16; the GPT-NeoX tokeniser has fewer than 65,536 ids).

The reader never loads the `.bin`: it memory-maps both files (numpy memmap for the index, an
mmap-backed array for the tokens, which can be advised for random access), and a sequence is a
view.

References:
  Shoeybi et al. 2019, "Megatron-LM" (arXiv 1909.08053): the indexed dataset format.
  Biderman et al. 2023, "Pythia" (arXiv 2304.01373): the pre-shuffled Pile in this format.
"""
from __future__ import annotations

import mmap
import os
import pathlib
import struct
from typing import Iterable, Sequence

import numpy as np

from halos_jax.data import _cache

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_BYTES = 34  # 9 magic + 8 version + 1 dtype code + 8 N + 8 D
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    8: np.dtype(np.uint16),
}
_FLOAT_CODES = {6: "float64", 7: "float32 (Megatron-Core) or float64 (GPT-NeoX/fairseq)"}
_CHUNK = 1 << 22  # entries per chunk when scanning the index (bounded memory on the Pile)


class MMIDIDXError(ValueError):
  """A missing, malformed or unsupported MMIDIDX file."""


def _supported_codes() -> str:
  return ", ".join(f"{c} {d.name}" for c, d in DTYPE_CODES.items())


def dtype_code(dtype) -> int:
  """The MMIDIDX code of a numpy integer dtype (see the table in the module docstring)."""
  dt = np.dtype(dtype)
  for code, d in DTYPE_CODES.items():
    if d == dt:
      return code
  raise MMIDIDXError(f"dtype {dt.name} has no MMIDIDX token code; supported: {_supported_codes()}")


def split_prefix(path: str | os.PathLike) -> pathlib.Path:
  """The dataset prefix: `path` without a trailing `.idx` or `.bin`, with ~ expanded."""
  p = str(path)
  if p.endswith((".idx", ".bin")):
    p = p[:-4]
  return pathlib.Path(os.path.expanduser(p))


class IndexedDataset:
  """A read-only MMIDIDX dataset; sequences are memmap views, nothing is loaded whole.

  Attributes:
    prefix: the path prefix; the files are `prefix.idx` and `prefix.bin`.
    idx_path, bin_path: the two files.
    dtype_code, dtype: the token dtype (code from the table above).
    sizes: int32 (N,) memmap, tokens per sequence.
    pointers: int64 (N,) memmap, byte offset of each sequence in the .bin.
    doc_idx: int64 (D,) memmap, the document index.
  """

  def __init__(self, prefix: str | os.PathLike):
    """Opens `prefix.idx` / `prefix.bin` and checks the header and file sizes.

    Args:
      prefix: the path prefix (a trailing `.idx` / `.bin` is accepted and dropped).

    Raises:
      MMIDIDXError: a file is missing, the magic, version or dtype code is wrong, or a file is
        shorter than its index says.
    """
    self.prefix = split_prefix(prefix)
    self.idx_path = self.prefix.with_name(self.prefix.name + ".idx")
    self.bin_path = self.prefix.with_name(self.prefix.name + ".bin")
    for path in (self.idx_path, self.bin_path):
      if not path.is_file():
        raise MMIDIDXError(
            f"MMIDIDX file not found: {path} (a dataset is a pair '<prefix>.idx' + "
            f"'<prefix>.bin'; config.data.path is the prefix {str(self.prefix)!r})")
    idx_bytes = self.idx_path.stat().st_size
    with open(self.idx_path, "rb") as f:
      header = f.read(HEADER_BYTES)
    if len(header) < len(MAGIC) and MAGIC.startswith(header):
      raise MMIDIDXError(
          f"{self.idx_path}: truncated header: {len(header)} bytes, expected {HEADER_BYTES}")
    if header[:len(MAGIC)] != MAGIC:
      raise MMIDIDXError(
          f"{self.idx_path}: not an MMIDIDX index: it starts with {header[:len(MAGIC)]!r}, "
          f"expected the magic {MAGIC!r}")
    if len(header) < HEADER_BYTES:
      raise MMIDIDXError(
          f"{self.idx_path}: truncated header: {len(header)} bytes, expected {HEADER_BYTES}")
    version, code, n, d = struct.unpack("<QBQQ", header[len(MAGIC):])
    if version != VERSION:
      raise MMIDIDXError(f"{self.idx_path}: MMIDIDX version {version}, expected {VERSION}")
    if code not in DTYPE_CODES:
      what = (f"a floating-point code ({_FLOAT_CODES[code]}), which cannot hold token ids"
              if code in _FLOAT_CODES else "unknown")
      raise MMIDIDXError(
          f"{self.idx_path}: dtype code {code} is {what}; supported token codes: "
          f"{_supported_codes()}")
    self.dtype_code = code
    self.dtype = DTYPE_CODES[code]
    self.num_sequences = n
    self.num_doc_idx = d
    need = HEADER_BYTES + 12 * n + 8 * d
    if idx_bytes < need:
      raise MMIDIDXError(
          f"{self.idx_path} is truncated: its header says {n} sequences and {d} document-index "
          f"entries, which need {need} bytes; the file has {idx_bytes}")
    mm = np.memmap(self.idx_path, mode="r", dtype=np.uint8)
    self.sizes = mm[HEADER_BYTES:HEADER_BYTES + 4 * n].view(np.int32)
    self.pointers = mm[HEADER_BYTES + 4 * n:HEADER_BYTES + 12 * n].view(np.int64)
    self.doc_idx = mm[HEADER_BYTES + 12 * n:need].view(np.int64)
    self.bin_bytes = self.bin_path.stat().st_size
    if n:
      end = int(self.pointers[n - 1]) + int(self.sizes[n - 1]) * self.dtype.itemsize
      if end > self.bin_bytes:
        raise MMIDIDXError(
            f"{self.bin_path} is truncated: the index places its last sequence's end at byte "
            f"{end}; the file has {self.bin_bytes} bytes")
    self._bin = None
    self._bin_mmap = None

  def __len__(self) -> int:
    return self.num_sequences

  @property
  def bin(self) -> np.ndarray:
    """The whole .bin as a read-only 1-D array of `dtype` over an mmap (mapped, not read)."""
    if self._bin is None:
      count = self.bin_bytes // self.dtype.itemsize
      if count:
        with open(self.bin_path, "rb") as f:
          self._bin_mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._bin = np.frombuffer(self._bin_mmap, self.dtype, count=count)
      else:
        self._bin = np.zeros(0, self.dtype)
    return self._bin

  def advise_random_access(self) -> None:
    """Tells the kernel the .bin will be read at random (a shuffled order).

    Without it, every page fault reads ahead around the faulting page (about 128 KiB), so
    gathering scattered 4 KiB sequences from a cold file is ~100x slower (measured: 148 ms vs
    0.9 ms for 64 random 2,049-token rows). No-op where madvise is unavailable.
    """
    _ = self.bin  # maps the file
    if self._bin_mmap is not None and hasattr(mmap, "MADV_RANDOM"):
      self._bin_mmap.madvise(mmap.MADV_RANDOM)

  def __getitem__(self, i: int) -> np.ndarray:
    """Sequence i as a read-only view into the memmapped .bin."""
    i = int(i)
    if not -self.num_sequences <= i < self.num_sequences:
      raise IndexError(f"sequence {i} out of range for {self.num_sequences} sequences")
    i %= self.num_sequences
    ptr, size = int(self.pointers[i]), int(self.sizes[i])
    if ptr % self.dtype.itemsize:
      raise MMIDIDXError(f"{self.idx_path}: pointer {ptr} of sequence {i} is not aligned to "
                         f"the {self.dtype.itemsize}-byte {self.dtype.name} tokens")
    start = ptr // self.dtype.itemsize
    if size < 0 or start + size > self.bin.size:
      raise MMIDIDXError(
          f"{self.bin_path}: sequence {i} (pointer {ptr}, size {size}) lies outside the "
          f"file's {self.bin.size} tokens (truncated or corrupt)")
    return self.bin[start:start + size]

  def contiguous_tokens(self) -> np.ndarray:
    """All tokens in index order as one 1-D view of the mapped .bin (no copy).

    Requires the layout every Megatron/GPT-NeoX writer produces: sequence i+1 starts where
    sequence i ends, i.e. pointers[i] = pointers[0] + itemsize * (sizes[0] + ... + sizes[i-1]).
    Checked here in chunks (one pass over the index; a few seconds for the Pile).

    Raises:
      MMIDIDXError: a negative size, or a gap / reordering between sequences.
    """
    n, itemsize = self.num_sequences, self.dtype.itemsize
    if n == 0:
      return self.bin[:0]
    base = int(self.pointers[0])
    expected = base  # byte offset where the next sequence must start
    for lo in range(0, n, _CHUNK):
      sizes = np.asarray(self.sizes[lo:lo + _CHUNK], np.int64)
      if (sizes < 0).any():
        j = lo + int(np.argmax(sizes < 0))
        raise MMIDIDXError(f"{self.idx_path}: sequence {j} has negative size {sizes[j - lo]}")
      ends = expected + itemsize * np.cumsum(sizes)
      starts = np.concatenate([[expected], ends[:-1]])
      bad = np.nonzero(np.asarray(self.pointers[lo:lo + _CHUNK]) != starts)[0]
      if bad.size:
        j = lo + int(bad[0])
        raise MMIDIDXError(
            f"{self.idx_path}: sequences are not stored contiguously in index order (sequence "
            f"{j} starts at byte {int(self.pointers[j])}, expected {int(starts[bad[0]])}); the "
            "stream reads the .bin as one token stream")
      expected = int(ends[-1])
    if base % itemsize:
      raise MMIDIDXError(f"{self.idx_path}: first pointer {base} is not aligned to "
                         f"{itemsize}-byte tokens")
    return self.bin[base // itemsize:expected // itemsize]


def write_mmidx(prefix: str | os.PathLike, sequences: Iterable[Sequence[int] | np.ndarray],
                dtype=np.uint16, doc_idx: Sequence[int] | None = None) -> pathlib.Path:
  """Writes an MMIDIDX dataset (small files, e.g. for tests and benchmarks).

  Args:
    prefix: path prefix; writes `prefix.bin` and `prefix.idx` (each atomically).
    sequences: the token sequences, stored contiguously in order.
    dtype: token dtype, one of the codes in `DTYPE_CODES`.
    doc_idx: the document index; default [0, 1, ..., N] (every sequence its own document).

  Returns:
    The prefix.

  Raises:
    MMIDIDXError: unsupported dtype, or a token that does not fit it.
  """
  prefix = split_prefix(prefix)
  dt = np.dtype(dtype)
  code = dtype_code(dt)
  info = np.iinfo(dt)
  arrays = []
  for i, seq in enumerate(sequences):
    a = np.asarray(seq)
    if a.ndim != 1:
      raise MMIDIDXError(f"sequence {i} has shape {a.shape}; sequences must be 1-D")
    if a.size and (a.min() < info.min or a.max() > info.max):
      raise MMIDIDXError(f"sequence {i} has tokens in [{a.min()}, {a.max()}], outside "
                         f"{dt.name}'s range [{info.min}, {info.max}]")
    arrays.append(a.astype(dt))
  sizes = np.array([a.size for a in arrays], np.int32)
  pointers = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)[:-1]]).astype(np.int64)
  pointers *= dt.itemsize
  if not arrays:
    pointers = np.zeros(0, np.int64)
  docs = np.arange(len(arrays) + 1, dtype=np.int64) if doc_idx is None else np.asarray(
      doc_idx, np.int64)

  def write_bin(tmp: pathlib.Path) -> None:
    with open(tmp, "wb") as f:
      for a in arrays:
        f.write(a.tobytes())

  def write_idx(tmp: pathlib.Path) -> None:
    with open(tmp, "wb") as f:
      f.write(MAGIC + struct.pack("<QBQQ", VERSION, code, len(arrays), docs.size))
      f.write(sizes.tobytes() + pointers.tobytes() + docs.tobytes())

  _cache.atomic_write(prefix.with_name(prefix.name + ".bin"), write_bin)
  _cache.atomic_write(prefix.with_name(prefix.name + ".idx"), write_idx)
  return prefix
