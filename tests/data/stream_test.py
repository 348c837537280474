"""The sequence stream: layout, split, shuffle, blocks, caches, config errors, MMIDIDX source."""
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from halos_jax import data
from halos_jax.data import _cache
from halos_jax.data import corpus
from halos_jax.data import mmidx
from halos_jax.data import stream as stream_lib
from halos_jax.data import tokenizers

L = 256  # default seq_len; sequences hold L + 1 = 257 tokens


def test_default_config():
  c = data.default_data_config()
  assert (c.source, c.tokenizer, c.seq_len, c.val_sequences, c.seed) == (
      "shakespeare", "byte", 256, 64, 0)
  assert (c.path, c.bpe_vocab_size, c.cache_dir, c.wrap_around) == ("", 16_384, "", False)


def test_shapes_and_sizes(byte_stream, byte_tokens):
  s = byte_stream
  n_total = byte_tokens.size // (L + 1)  # whole sequences in the stream; the rest is dropped
  assert (s.seq_len, s.vocab_size, s.num_train, s.num_val) == (L, 256, n_total - 64, 64)
  b = s.block(0, 64)
  assert (b.shape, b.dtype) == ((64, L + 1), np.int32)
  v = s.validation()
  assert (v.shape, v.dtype) == ((64, L + 1), np.int32)
  assert s.block(7, 7).shape == (0, L + 1)


def test_layout_matches_an_independent_cut(byte_stream, byte_tokens):
  # Sequence k of the cut is tokens[k * 257:(k + 1) * 257]; training position p holds sequence
  # order[p] with order = PCG64(seed 0).permutation(num_train); validation = the last 64.
  s = byte_stream
  n_total = s.num_train + s.num_val
  cut = byte_tokens[:n_total * (L + 1)].reshape(n_total, L + 1)
  order = np.random.Generator(np.random.PCG64(0)).permutation(s.num_train)
  np.testing.assert_array_equal(s.sequence_ids(0, s.num_train), order)
  np.testing.assert_array_equal(s.block(0, s.num_train), cut[order])
  np.testing.assert_array_equal(s.validation(), cut[s.num_train:])
  np.testing.assert_array_equal(s.validation_ids(), np.arange(s.num_train, n_total))


def test_train_and_validation_are_disjoint(byte_stream):
  s = byte_stream
  train_ids = s.sequence_ids(0, s.num_train)
  val_ids = s.validation_ids()
  assert np.intersect1d(train_ids, val_ids).size == 0
  # Together they are the whole cut, each sequence exactly once.
  np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])),
                                np.arange(s.num_train + s.num_val))
  # No validation sequence's content appears among the training sequences either.
  train_rows = {r.tobytes() for r in s.block(0, s.num_train)}
  assert not any(r.tobytes() in train_rows for r in s.validation())


def test_tuning_split_sits_before_validation(byte_stream, make_config, byte_tokens):
  # Cut: [training | 32 tuning | 64 validation]. Validation is the same text as without a
  # tuning split; the tuning sequences are the 32 before it; training loses exactly those.
  s = data.build_stream(make_config(tune_sequences=32))
  n_total = byte_tokens.size // (L + 1)
  cut = byte_tokens[:n_total * (L + 1)].reshape(n_total, L + 1)
  assert (s.num_train, s.num_tune, s.num_val) == (n_total - 96, 32, 64)
  np.testing.assert_array_equal(s.validation(), byte_stream.validation())
  np.testing.assert_array_equal(s.tuning(), cut[n_total - 96:n_total - 64])
  np.testing.assert_array_equal(s.tuning_ids(), np.arange(n_total - 96, n_total - 64))
  np.testing.assert_array_equal(s.validation_ids(), byte_stream.validation_ids())
  ids = np.concatenate([s.sequence_ids(0, s.num_train), s.tuning_ids(), s.validation_ids()])
  np.testing.assert_array_equal(np.sort(ids), np.arange(n_total))  # each sequence once
  assert not s.tuning().flags.writeable
  assert "32 tuning + 64 validation" in s.describe()
  # The fingerprint changes with a tuning split and not without one (tune_sequences=0 is the
  # default: every existing run keeps its fingerprint).
  assert s.fingerprint() != byte_stream.fingerprint()
  assert data.build_stream(make_config(tune_sequences=0)).fingerprint() == (
      byte_stream.fingerprint())
  assert byte_stream.tuning().shape == (0, L + 1)


def test_shuffle_is_deterministic_in_the_seed(byte_stream, make_config):
  same = data.build_stream(make_config())
  other = data.build_stream(make_config(seed=1))
  n = byte_stream.num_train
  np.testing.assert_array_equal(same.block(0, n), byte_stream.block(0, n))
  assert same.fingerprint() == byte_stream.fingerprint()
  assert not np.array_equal(other.sequence_ids(0, n), byte_stream.sequence_ids(0, n))
  assert other.fingerprint() != byte_stream.fingerprint()
  # Another seed reorders the same training set and validates on the same sequences.
  np.testing.assert_array_equal(np.sort(other.sequence_ids(0, n)), np.arange(n))
  np.testing.assert_array_equal(other.validation(), byte_stream.validation())


@given(st.integers(0, 3000), st.integers(0, 2**32))
def test_training_order_is_the_pcg64_permutation(n, seed):
  expected = np.random.Generator(np.random.PCG64(seed)).permutation(n)
  np.testing.assert_array_equal(stream_lib.training_order(n, seed), expected)


def test_unshuffled_order(make_config, byte_tokens):
  s = data.build_stream(make_config(shuffle=False))
  np.testing.assert_array_equal(s.sequence_ids(0, s.num_train), np.arange(s.num_train))
  # Position p is sequence p of the cut: tokens[257 p:257 (p + 1)].
  np.testing.assert_array_equal(s.block(3, 5), byte_tokens[3 * 257:5 * 257].reshape(2, 257))


@given(st.data())
def test_blocks_are_contiguous(byte_stream, draw):
  n = byte_stream.num_train
  a, b, c = sorted(draw.draw(st.lists(st.integers(0, n), min_size=3, max_size=3)))
  np.testing.assert_array_equal(
      np.concatenate([byte_stream.block(a, b), byte_stream.block(b, c)]), byte_stream.block(a, c))


def test_past_the_end_is_an_error_naming_the_numbers(byte_stream):
  n = byte_stream.num_train
  with pytest.raises(ValueError, match=rf"block\({n - 1}, {n + 1}\) runs past the end .*"
                     rf"num_train={n} .*wrap_around=False.*config.data.wrap_around=True"):
    byte_stream.block(n - 1, n + 1)
  byte_stream.block(n - 1, n)  # the last sequence itself is fine


@pytest.fixture(scope="module")
def wrap_stream(make_config):
  return data.build_stream(make_config(wrap_around=True))


def test_explicit_wrap_around(wrap_stream, byte_stream):
  n = wrap_stream.num_train
  # Position p reads sequence order[p mod n]: [n-2, n+2) = positions n-2, n-1, 0, 1.
  np.testing.assert_array_equal(
      wrap_stream.block(n - 2, n + 2),
      np.concatenate([byte_stream.block(n - 2, n), byte_stream.block(0, 2)]))
  np.testing.assert_array_equal(wrap_stream.block(2 * n + 5, 2 * n + 8), byte_stream.block(5, 8))
  assert wrap_stream.fingerprint() == byte_stream.fingerprint()  # same data, same order


@given(st.data())
def test_wrapped_blocks_are_contiguous(wrap_stream, draw):
  n = wrap_stream.num_train
  a, b, c = sorted(draw.draw(st.lists(st.integers(0, 3 * n), min_size=3, max_size=3)))
  np.testing.assert_array_equal(
      np.concatenate([wrap_stream.block(a, b), wrap_stream.block(b, c)]), wrap_stream.block(a, c))


@pytest.mark.parametrize("start, end, exc", [
    (1.0, 2, TypeError), (0, "3", TypeError), (True, 2, TypeError),
    (-1, 3, ValueError), (5, 3, ValueError)])
def test_bad_block_arguments(byte_stream, start, end, exc):
  with pytest.raises(exc, match=r"block"):
    byte_stream.block(start, end)


def test_numpy_integers_are_accepted(byte_stream):
  np.testing.assert_array_equal(byte_stream.block(np.int64(3), np.int32(5)),
                                byte_stream.block(3, 5))


def test_blocks_are_fresh_arrays(byte_stream):
  b = byte_stream.block(0, 2)
  b[:] = -1
  assert (byte_stream.block(0, 2) >= 0).all()
  assert not byte_stream.validation().flags.writeable


def test_fingerprint_covers_the_data_settings(byte_stream, make_config):
  fp = byte_stream.fingerprint()
  assert len(fp) == 64 and int(fp, 16) >= 0  # a sha256 hex digest
  for change in ({"seq_len": 128}, {"val_sequences": 32}, {"shuffle": False}):
    assert data.build_stream(make_config(**change)).fingerprint() != fp


@pytest.mark.parametrize("key, value, exc, words", [
    ("source", "pile", ValueError, "config.data.source='pile': must be one of"),
    ("tokenizer", "wordpiece", ValueError, "config.data.tokenizer='wordpiece'"),
    ("seq_len", 0, ValueError, "config.data.seq_len=0: must be an int >= 1"),
    ("seq_len", 256.0, TypeError, "config.data.seq_len=256.0"),
    ("val_sequences", -1, ValueError, "config.data.val_sequences=-1"),
    ("seed", -3, ValueError, "config.data.seed=-3"),
    ("wrap_around", "yes", TypeError, "config.data.wrap_around='yes': must be a bool"),
    ("bpe_vocab_size", 100, ValueError, "config.data.bpe_vocab_size=100"),
    ("seqlen", 5, ValueError, "unknown key(s) ['seqlen']"),
])
def test_bad_config_fields(key, value, exc, words):
  cfg = data.default_data_config().to_dict()
  cfg[key] = value
  with pytest.raises(exc) as info:
    data.parse_data_config(cfg)
  assert words in str(info.value)


def test_mmidx_needs_a_path():
  with pytest.raises(ValueError, match=r"config.data.path='': must be the prefix"):
    data.parse_data_config({"source": "mmidx"})


def test_too_few_sequences_for_validation(make_config, byte_tokens):
  n_total = byte_tokens.size // (L + 1)
  with pytest.raises(ValueError, match=rf"holds {n_total} sequences .*val_sequences={n_total} "
                     "and tune_sequences=0 leave no training sequence"):
    data.build_stream(make_config(val_sequences=n_total))
  with pytest.raises(ValueError, match=r"val_sequences=64 and tune_sequences=.* leave no"):
    data.build_stream(make_config(tune_sequences=n_total - 64))


def test_tokens_are_cached_on_disk_and_reused(byte_stream, make_config, cache_dir,
                                              monkeypatch):
  folder = _cache.resolve_cache_dir(cache_dir)
  docs = corpus.load_corpus()
  path = stream_lib.token_cache_path(folder, corpus.corpus_fingerprint(docs),
                                     tokenizers.byte_tokenizer())
  assert path.is_file()
  assert [f for f in os.listdir(path.parent) if f.endswith(".tmp")] == []

  def no_tokenising(self, texts):
    raise AssertionError("the token cache must be reused")

  monkeypatch.setattr(tokenizers.ByteTokenizer, "encode_documents", no_tokenising)
  monkeypatch.setattr(stream_lib, "_TOKENS", {})  # a new process: nothing in memory
  again = data.build_stream(make_config())
  assert again.fingerprint() == byte_stream.fingerprint()
  np.testing.assert_array_equal(again.block(0, 100), byte_stream.block(0, 100))


# --- BPE and GPT-2 streams (on the mini corpus, to stay fast) ------------------------------------


@pytest.mark.parametrize("tokenizer", ["bpe", "gpt2"])
def test_bpe_streams(tokenizer, mini_docs, small_bpe, make_config, monkeypatch):
  del small_bpe  # trained (and cached) by the fixture; build_stream must find it
  monkeypatch.setattr(corpus, "load_corpus", lambda: mini_docs)
  monkeypatch.setattr(tokenizers, "train_bpe", None)  # reuse the cached 1k BPE, never train
  s = data.build_stream(make_config(tokenizer=tokenizer, bpe_vocab_size=1024,
                                    seq_len=64, val_sequences=8))
  tok = s.tokenizer
  assert s.vocab_size == tok.vocab_size == {"bpe": 1024, "gpt2": 50_257}[tokenizer]
  # Reassemble the cut in stream order: it decodes to a prefix of the joined documents.
  n_total = s.num_train + s.num_val
  rows = np.empty((n_total, 65), np.int32)
  rows[s.sequence_ids(0, s.num_train)] = s.block(0, s.num_train)
  rows[s.validation_ids()] = s.validation()
  joined = "".join(d.text + tokenizers.EOT_TOKEN for d in mini_docs)
  decoded = tok.decode(rows.reshape(-1))
  assert len(decoded) > 0.99 * len(joined) and joined.startswith(decoded)
  assert (rows == tok.eot_id).sum() in (3, 4)  # 4 separators, the last may fall in the cut-off


# --- MMIDIDX source ------------------------------------------------------------------------------


def mmidx_config(prefix, **overrides):
  c = data.default_data_config()
  c.source, c.path, c.seq_len, c.val_sequences = "mmidx", str(prefix), 8, 3
  for k, v in overrides.items():
    c[k] = v
  return c


def test_mmidx_one_sequence_per_entry(tmp_path):
  # 20 entries of seq_len + 1 = 9 tokens: entry i holds 9i .. 9i + 8, so sequence i = entry i.
  entries = [np.arange(9 * i, 9 * i + 9) for i in range(20)]
  prefix = mmidx.write_mmidx(tmp_path / "pile", entries, dtype=np.uint16)
  s = data.build_stream(mmidx_config(prefix, shuffle=False, vocab_size=200))
  assert (s.num_train, s.num_val, s.vocab_size) == (17, 3, 200)
  np.testing.assert_array_equal(s.block(0, 17), np.stack(entries[:17]))
  np.testing.assert_array_equal(s.validation(), np.stack(entries[17:]))  # the last 3 entries
  shuffled = data.build_stream(mmidx_config(prefix, seed=4, vocab_size=200))
  order = np.random.Generator(np.random.PCG64(4)).permutation(17)
  np.testing.assert_array_equal(shuffled.block(0, 17), np.stack(entries)[order])
  assert shuffled.tokenizer is None


def test_mmidx_entries_are_concatenated(tmp_path):
  # Entries of uneven sizes form one token stream 0, 1, ..., 99 cut into sequences of 9.
  sizes = [5, 30, 1, 0, 64]
  bounds = np.cumsum([0] + sizes)
  entries = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
  prefix = mmidx.write_mmidx(tmp_path / "d", entries, dtype=np.int32)
  s = data.build_stream(mmidx_config(prefix, shuffle=False, vocab_size=100))
  cut = np.arange(99).reshape(11, 9)  # 100 tokens -> 11 sequences of 9, token 99 dropped
  np.testing.assert_array_equal(s.block(0, 8), cut[:8])
  np.testing.assert_array_equal(s.validation(), cut[8:])


def test_mmidx_token_ids_are_checked_against_vocab_size(tmp_path):
  # Entry 70 holds id 300 >= 256; the build checks the first 64 training sequences, blocks
  # check what they read.
  entries = [np.full(9, 5)] * 70 + [np.full(9, 300)] + [np.full(9, 5)] * 9
  prefix = mmidx.write_mmidx(tmp_path / "d", entries, dtype=np.uint16)
  s = data.build_stream(mmidx_config(prefix, shuffle=False, tokenizer="byte"))
  assert s.vocab_size == 256
  s.block(0, 70)
  with pytest.raises(ValueError, match=r"training position 70 holds token ids in \[5, 300\] but "
                     r"vocab_size is 256 .*set config.data.vocab_size"):
    s.block(68, 72)
  fixed = data.build_stream(mmidx_config(prefix, shuffle=False, vocab_size=301))
  assert fixed.block(68, 72)[2, 0] == 300
  early = [np.full(9, 300)] + [np.full(9, 5)] * 9
  prefix = mmidx.write_mmidx(tmp_path / "e", early, dtype=np.uint16)
  with pytest.raises(ValueError, match=r"training position 0 holds token ids"):
    data.build_stream(mmidx_config(prefix, shuffle=False, tokenizer="byte"))  # fails at once


def test_mmidx_errors_reach_the_caller(tmp_path):
  with pytest.raises(mmidx.MMIDIDXError, match=r"MMIDIDX file not found: .*nothing\.idx"):
    data.build_stream(mmidx_config(tmp_path / "nothing"))
