"""MMIDIDX: the byte layout, round trips over dtypes and sizes, and every error."""
import mmap
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from halos_jax.data import mmidx

INT_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}


def test_dtype_table():
  # Megatron-Core DType enum / GPT-NeoX `dtypes`, integer codes only.
  assert {c: d.type for c, d in mmidx.DTYPE_CODES.items()} == INT_CODES
  assert mmidx.dtype_code(np.uint16) == 8


def test_layout_by_hand(tmp_path):
  prefix = mmidx.write_mmidx(tmp_path / "d", [[1, 2, 3], [7]], dtype=np.uint16)
  idx = (tmp_path / "d.idx").read_bytes()
  expected = (b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + bytes([8])  # magic, version, uint16
              + struct.pack("<QQ", 2, 3)  # 2 sequences; document index [0, 1, 2]
              + np.array([3, 1], np.int32).tobytes()  # sizes
              + np.array([0, 6], np.int64).tobytes()  # byte pointers: 0, 3 tokens x 2 bytes
              + np.array([0, 1, 2], np.int64).tobytes())
  assert idx == expected
  assert len(idx) == 34 + 2 * 4 + 2 * 8 + 3 * 8  # header + sizes + pointers + doc index
  assert (tmp_path / "d.bin").read_bytes() == bytes([1, 0, 2, 0, 3, 0, 7, 0])  # little-endian
  ds = mmidx.IndexedDataset(prefix)
  assert ds[1].tolist() == [7] and ds[-2].tolist() == [1, 2, 3]


@st.composite
def datasets(draw):
  code = draw(st.sampled_from(sorted(INT_CODES)))
  info = np.iinfo(INT_CODES[code])
  seqs = draw(st.lists(st.lists(st.integers(int(info.min), int(info.max)), max_size=30),
                       max_size=12))
  return code, seqs


@given(datasets())
def test_round_trip(ds_spec):
  code, seqs = ds_spec
  with tempfile.TemporaryDirectory() as tmp:
    prefix = mmidx.write_mmidx(f"{tmp}/x", seqs, dtype=INT_CODES[code])
    ds = mmidx.IndexedDataset(prefix)
    assert (ds.dtype_code, ds.dtype, len(ds)) == (code, np.dtype(INT_CODES[code]), len(seqs))
    assert ds.sizes.tolist() == [len(s) for s in seqs]
    # Pointer i = itemsize x (tokens before sequence i).
    itemsize = np.dtype(INT_CODES[code]).itemsize
    assert ds.pointers.tolist() == [itemsize * sum(map(len, seqs[:i])) for i in range(len(seqs))]
    assert ds.doc_idx.tolist() == list(range(len(seqs) + 1))
    for i, s in enumerate(seqs):
      assert ds[i].tolist() == s
    assert ds.contiguous_tokens().tolist() == [t for s in seqs for t in s]
    del ds  # release the memmaps before the folder goes


def test_sequences_are_views_of_the_mapped_file(tmp_path):
  ds = mmidx.IndexedDataset(mmidx.write_mmidx(tmp_path / "d", [[1, 2], [3, 4, 5]]))
  assert isinstance(ds.bin.base.obj, mmap.mmap) and not ds.bin.flags.writeable
  assert isinstance(ds.sizes.base, np.memmap)
  assert np.shares_memory(ds[1], ds.bin)  # a view into the mapping, not a copy
  assert np.shares_memory(ds.contiguous_tokens(), ds.bin)
  ds.advise_random_access()  # a hint only: the data reads the same
  assert ds[1].tolist() == [3, 4, 5]


def test_prefix_may_carry_a_suffix(tmp_path):
  mmidx.write_mmidx(tmp_path / "d", [[5]])
  for p in (tmp_path / "d", f"{tmp_path}/d.idx", f"{tmp_path}/d.bin"):
    assert mmidx.IndexedDataset(p)[0].tolist() == [5]


def test_custom_document_index(tmp_path):
  ds = mmidx.IndexedDataset(mmidx.write_mmidx(tmp_path / "d", [[1], [2], [3]], doc_idx=[0, 2, 3]))
  assert ds.doc_idx.tolist() == [0, 2, 3] and ds.num_doc_idx == 3


# --- Errors -------------------------------------------------------------------------------------


@pytest.fixture
def prefix(tmp_path):
  return mmidx.write_mmidx(tmp_path / "d", [[1, 2, 3], [4, 5]], dtype=np.uint16)


def patch_idx(prefix, offset, new: bytes):
  path = prefix.with_name(prefix.name + ".idx")
  raw = bytearray(path.read_bytes())
  raw[offset:offset + len(new)] = new
  path.write_bytes(bytes(raw))
  return path


@pytest.mark.parametrize("missing", [".idx", ".bin"])
def test_missing_file(prefix, missing):
  prefix.with_name(prefix.name + missing).unlink()
  with pytest.raises(mmidx.MMIDIDXError, match=rf"MMIDIDX file not found: .*d\{missing}"):
    mmidx.IndexedDataset(prefix)


def test_wrong_magic(prefix):
  patch_idx(prefix, 0, b"TNTIDX\x00\x00\x00")  # the older, non-mmap index format
  with pytest.raises(mmidx.MMIDIDXError, match=r"d\.idx: not an MMIDIDX index.*expected the "
                     r"magic b'MMIDIDX"):
    mmidx.IndexedDataset(prefix)


def test_wrong_version(prefix):
  patch_idx(prefix, 9, struct.pack("<Q", 2))
  with pytest.raises(mmidx.MMIDIDXError, match=r"d\.idx: MMIDIDX version 2, expected 1"):
    mmidx.IndexedDataset(prefix)


@pytest.mark.parametrize("code, what", [(6, "floating-point"), (7, "floating-point"),
                                        (0, "unknown"), (9, "unknown")])
def test_wrong_dtype_code(prefix, code, what):
  patch_idx(prefix, 17, bytes([code]))
  with pytest.raises(mmidx.MMIDIDXError, match=rf"dtype code {code} is .*{what}.*supported "
                     r"token codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16"):
    mmidx.IndexedDataset(prefix)


def test_truncated_index(prefix):
  path = prefix.with_name(prefix.name + ".idx")
  raw = path.read_bytes()
  path.write_bytes(raw[:-1])  # needs 34 + 2*4 + 2*8 + 3*8 = 82 bytes, has 81
  with pytest.raises(mmidx.MMIDIDXError, match=r"d\.idx is truncated: .* 2 sequences and 3 "
                     r"document-index entries, which need 82 bytes; the file has 81"):
    mmidx.IndexedDataset(prefix)
  for cut in (20, 5):
    path.write_bytes(raw[:cut])
    with pytest.raises(mmidx.MMIDIDXError, match=rf"truncated header: {cut} bytes, expected 34"):
      mmidx.IndexedDataset(prefix)


def test_truncated_bin(prefix):
  path = prefix.with_name(prefix.name + ".bin")
  path.write_bytes(path.read_bytes()[:-2])  # 5 uint16 tokens = 10 bytes; keep 8
  with pytest.raises(mmidx.MMIDIDXError, match=r"d\.bin is truncated: .* at byte 10; the file "
                     r"has 8 bytes"):
    mmidx.IndexedDataset(prefix)


def test_non_contiguous_layout(prefix):
  # Sequence 1 should start at byte 6 (3 uint16 tokens); point it at byte 4 instead.
  patch_idx(prefix, 34 + 2 * 4 + 8, struct.pack("<q", 4))
  ds = mmidx.IndexedDataset(prefix)
  assert ds[1].tolist() == [3, 4]  # readable entry by entry (bytes 4..7)
  with pytest.raises(mmidx.MMIDIDXError, match=r"not stored contiguously .*sequence 1 starts "
                     r"at byte 4, expected 6"):
    ds.contiguous_tokens()


def test_writer_checks_values_and_dtypes(tmp_path):
  with pytest.raises(mmidx.MMIDIDXError, match=r"sequence 1 has tokens in \[0, 256\], outside "
                     r"uint8's range \[0, 255\]"):
    mmidx.write_mmidx(tmp_path / "d", [[1], [0, 256]], dtype=np.uint8)
  with pytest.raises(mmidx.MMIDIDXError, match=r"dtype float32 has no MMIDIDX token code"):
    mmidx.write_mmidx(tmp_path / "d", [[1]], dtype=np.float32)
  assert issubclass(mmidx.MMIDIDXError, ValueError)
