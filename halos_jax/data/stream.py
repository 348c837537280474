"""The sequence stream: fixed-length sequences, a held-out validation split, a seeded shuffle.

Layout (docs/algorithms.md 4), the same for both sources:

  tokens    one 1-D token stream. Shakespeare: the cleaned documents in file-name order, each
            followed by the tokeniser's end-of-text id (doc_1 EOT doc_2 EOT ... doc_n EOT, the
            GPT-NeoX `--append-eod` layout). MMIDIDX: the .bin's sequences concatenated in index
            order, as stored (their own separators included); with the Pythia Pile files
            (2,049 tokens per entry) and seq_len 2,048, sequence i is exactly index entry i.
  cut       n = len(tokens) // (seq_len + 1) non-overlapping sequences of seq_len + 1 tokens
            (inputs = seq[:-1], targets = seq[1:]); the last len(tokens) mod (seq_len + 1)
            tokens are dropped.
  split     validation = the LAST val_sequences sequences of the cut (as the reference holds out
            the last sequences of its stream); tuning = the tune_sequences before them (0 by
            default: none), a second held-out set for choosing hyper-parameters without looking
            at the reported validation loss (issue 17); training = the n - val_sequences -
            tune_sequences before those. The split is made before shuffling and does not depend
            on the seed, so every seed validates (and tunes) on the same text; the three sets
            share no token position by construction.
  shuffle   training position p holds sequence order[p], order = a PCG64 permutation of the
            training sequences: numpy.random.Generator(PCG64(seed)).permutation(num_train).
            With shuffle=False (the pre-shuffled Pile), order is the identity.
  block     block(start, end) = training sequences [start, end) in that order; past num_train
            it is an error unless wrap_around, then position p reads order[p mod num_train].

Tokenisation happens once per corpus and tokeniser: the token stream is cached on disk in
`cache_dir` (keyed by the corpus and tokeniser fingerprints, written atomically) and in memory, so
block() is a slice (Shakespeare: the shuffled training set is materialised as int32, a few MB) or
a row gather from the memmapped .bin (MMIDIDX, never loaded whole).

References:
  docs/algorithms.md 4 (the reference's stream and validation split).
  Black et al. 2022, "GPT-NeoX-20B" (arXiv 2204.06745): documents packed with end-of-text ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any, Mapping

import ml_collections
import numpy as np

from halos_jax import fields
from halos_jax.data import _cache
from halos_jax.data import corpus
from halos_jax.data import mmidx
from halos_jax.data import tokenizers

SOURCES = ("shakespeare", "mmidx")
# Vocabulary of each tokeniser without building it (MMIDIDX tokens are given; only the size
# matters there).
_STATIC_VOCAB = {"byte": 256, "gpt2": 50_257}
_SAMPLE_BYTES = 1 << 20  # MMIDIDX identity: sha256 of the first and last MiB of each file


def default_data_config() -> ml_collections.ConfigDict:
  """`config.data` with its defaults (the embedded corpus, byte tokens, 256-token inputs)."""
  c = ml_collections.ConfigDict()
  c.source = "shakespeare"  # 'shakespeare' (embedded corpus) | 'mmidx' (Megatron .idx/.bin)
  c.path = ""  # mmidx: path prefix of the .idx/.bin pair (e.g. /data/pile/document)
  c.tokenizer = "byte"  # byte | bpe | gpt2 (mmidx: tokens are given; only sets vocab_size)
  c.bpe_vocab_size = 16_384  # vocabulary of the corpus-trained BPE, incl. <|endoftext|>
  c.cache_dir = ""  # tokeniser and token caches; '' = ~/.cache/halos_jax
  c.seq_len = 256  # input tokens per sequence; sequences hold seq_len + 1 tokens
  c.val_sequences = 64  # held-out validation sequences (the last ones of the stream)
  c.tune_sequences = 0  # held-out tuning sequences (just before the validation ones); 0: none
  c.seed = 0  # PCG64 seed of the training-sequence shuffle
  c.wrap_around = False  # True: block() past the end wraps modulo num_train instead of failing
  c.shuffle = True  # False: training sequences in stream order (the pre-shuffled Pile)
  c.vocab_size = 0  # 0: the tokeniser's; mmidx data tokenised elsewhere: its vocabulary
  return c


_DEFAULTS = default_data_config().to_dict()


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """`config.data`, validated (see `default_data_config` for the meaning of each field)."""
  source: str
  path: str
  tokenizer: str
  bpe_vocab_size: int
  cache_dir: str
  seq_len: int
  val_sequences: int
  tune_sequences: int
  seed: int
  wrap_around: bool
  shuffle: bool
  vocab_size: int


def parse_data_config(data_config: Any) -> DataSettings:
  """Validates `config.data` (a ConfigDict or a mapping); missing keys take their defaults.

  Raises:
    ValueError / TypeError: an unknown key, or a field with a wrong type or value (the message
      names the field, the value and what is allowed).
  """
  if hasattr(data_config, "to_dict"):
    given = data_config.to_dict()
  elif isinstance(data_config, Mapping):
    given = dict(data_config)
  else:
    raise TypeError(f"config.data must be an ml_collections.ConfigDict or a mapping, got "
                    f"{type(data_config).__name__}")
  unknown = sorted(set(given) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"config.data has unknown key(s) {unknown}; allowed: {sorted(_DEFAULTS)}")
  v = {**_DEFAULTS, **given}

  def fail(key: str, allowed: str, exc=ValueError):
    raise exc(f"config.data.{key}={v[key]!r}: must be {allowed}")

  if v["source"] not in SOURCES:
    fail("source", f"one of {SOURCES}")
  if v["tokenizer"] not in tokenizers.TOKENIZER_NAMES:
    fail("tokenizer", f"one of {tokenizers.TOKENIZER_NAMES}")
  for key in ("path", "cache_dir"):
    if not isinstance(v[key], str):
      fail(key, "a str", TypeError)
  if v["source"] == "mmidx" and not v["path"]:
    fail("path", "the prefix of an MMIDIDX .idx/.bin pair when source='mmidx'")
  for key, low in (("seq_len", 1), ("val_sequences", 0), ("tune_sequences", 0), ("seed", 0),
                    ("vocab_size", 0)):
    if not fields.is_int(v[key]):
      fail(key, f"an int >= {low}", TypeError)
    if v[key] < low:
      fail(key, f"an int >= {low}")
  tokenizers.check_bpe_vocab_size(v["bpe_vocab_size"])
  for key in ("wrap_around", "shuffle"):
    if not isinstance(v[key], (bool, np.bool_)):
      fail(key, "a bool", TypeError)
  return DataSettings(**{k: (bool(x) if isinstance(x, (bool, np.bool_)) else
                             int(x) if fields.is_int(x) else x) for k, x in v.items()})


def training_order(num_train: int, seed: int) -> np.ndarray:
  """PCG64 permutation of range(num_train); equal to Generator(PCG64(seed)).permutation.

  Generator.permutation(n) shuffles np.arange(n) in place; doing the same on an int32 arange
  gives the same permutation with half the memory (matters for the Pile's ~10^8 sequences).
  """
  order = np.arange(num_train, dtype=np.int32 if num_train < 2**31 else np.int64)
  np.random.Generator(np.random.PCG64(seed)).shuffle(order)
  return order


class SequenceStream:
  """Training blocks and the validation set of one data configuration.

  Attributes:
    seq_len: input tokens per sequence (sequences hold seq_len + 1).
    vocab_size: token ids are in [0, vocab_size).
    num_train: training sequences (distinct; block() positions 0 .. num_train - 1).
    num_val: validation sequences.
    num_tune: tuning sequences (0: none).
    tokenizer: the tokeniser (Shakespeare), or None (MMIDIDX: tokens are given).
  """

  def __init__(self, windows: np.ndarray, *, settings: DataSettings, vocab_size: int,
               source_identity: str, tokenizer_identity: str, tokenizer, description: str,
               check_ids: bool, materialize: bool):
    """Builds the split and the order over `windows` (use `build_stream`)."""
    s = settings
    n_total = windows.shape[0]
    if n_total <= s.val_sequences + s.tune_sequences:
      raise ValueError(
          f"the data holds {n_total} sequences of seq_len + 1 = {s.seq_len + 1} tokens; "
          f"config.data.val_sequences={s.val_sequences} and tune_sequences="
          f"{s.tune_sequences} leave no training sequence (lower them or seq_len)")
    self.seq_len = s.seq_len
    self.vocab_size = vocab_size
    self.num_train = n_total - s.val_sequences - s.tune_sequences
    self.num_val = s.val_sequences
    self.num_tune = s.tune_sequences
    self.tokenizer = tokenizer
    self.wrap_around = s.wrap_around
    self._settings = s
    self._windows = windows  # (n_total, seq_len + 1); a memmap view for MMIDIDX
    self._order = training_order(self.num_train, s.seed) if s.shuffle else None
    self._check_ids = check_ids
    self._description = description
    identity = {
        "source": source_identity, "tokenizer": tokenizer_identity, "seq_len": s.seq_len,
        "val_sequences": s.val_sequences, "seed": s.seed, "shuffle": s.shuffle,
    }
    if s.tune_sequences:  # absent when 0, so data without a tuning split keeps its fingerprint
      identity["tune_sequences"] = s.tune_sequences
    self._fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    first_val = self.num_train + self.num_tune
    tune = np.asarray(windows[self.num_train:first_val])
    self._check(tune, "tuning sequence", self.num_train)
    self._tune = tune.astype(np.int32)
    self._tune.flags.writeable = False
    val = np.asarray(windows[first_val:])
    self._check(val, "validation sequence", first_val)
    self._val = val.astype(np.int32)
    self._val.flags.writeable = False
    # Shakespeare: the shuffled training set in memory, so a block is one slice.
    self._train = (np.ascontiguousarray(self._rows(0, self.num_train), np.int32)
                   if materialize else None)
    if check_ids:  # fail at start-up rather than hours in, on the first blocks at least
      self.block(0, min(self.num_train, 64))

  # --- The API ----------------------------------------------------------------------------------

  def block(self, start: int, end: int) -> np.ndarray:
    """Training sequences [start, end) of the shuffled stream.

    Args:
      start: first position (>= 0).
      end: one past the last position (>= start).

    Returns:
      int32 array (end - start, seq_len + 1).

    Raises:
      TypeError: start or end is not an int.
      ValueError: start < 0, end < start, or end > num_train without wrap_around.
    """
    pos = self._positions(start, end)
    if self._train is not None:
      return np.array(self._train[pos], np.int32)  # a fresh array: callers may modify it
    return self._gather(pos, start)

  def validation(self) -> np.ndarray:
    """The held-out sequences: int32 (val_sequences, seq_len + 1), read-only."""
    return self._val

  def tuning(self) -> np.ndarray:
    """The held-out tuning sequences: int32 (tune_sequences, seq_len + 1), read-only."""
    return self._tune

  def fingerprint(self) -> str:
    """sha256 of the source identity, tokeniser, seq_len, val_sequences (and tune_sequences
    when > 0), seed and shuffle."""
    return self._fingerprint

  def sequence_ids(self, start: int, end: int) -> np.ndarray:
    """Indices in the unshuffled cut of training positions [start, end) (int64)."""
    pos = self._positions(start, end)
    if self._order is not None:
      return self._order[pos].astype(np.int64)
    if isinstance(pos, slice):
      return np.arange(pos.start, pos.stop, dtype=np.int64)
    return pos  # wrapped positions, already reduced modulo num_train

  def validation_ids(self) -> np.ndarray:
    """Indices in the unshuffled cut of the validation sequences (the last num_val)."""
    first = self.num_train + self.num_tune
    return np.arange(first, first + self.num_val, dtype=np.int64)

  def tuning_ids(self) -> np.ndarray:
    """Indices in the unshuffled cut of the tuning sequences (just before validation's)."""
    return np.arange(self.num_train, self.num_train + self.num_tune, dtype=np.int64)

  def describe(self) -> str:
    """One line for logs: source, tokeniser, sizes, split."""
    s = self._settings
    order = f"seed {s.seed}" if s.shuffle else "unshuffled"
    tune = f"{self.num_tune:,} tuning + " if self.num_tune else ""
    return (f"{self._description}; seq_len {s.seq_len}: {self.num_train:,} training + "
            f"{tune}{self.num_val:,} validation sequences ({order}"
            f"{', wrap-around' if s.wrap_around else ''})")

  def __repr__(self) -> str:
    return f"SequenceStream({self.describe()})"

  # --- Internals --------------------------------------------------------------------------------

  def _positions(self, start: int, end: int) -> slice | np.ndarray:
    for name, x in (("start", start), ("end", end)):
      if not fields.is_int(x):
        raise TypeError(f"block {name} must be an int, got {x!r} ({type(x).__name__})")
    start, end = int(start), int(end)
    if start < 0 or end < start:
      raise ValueError(f"block({start}, {end}): need 0 <= start <= end")
    if end <= self.num_train:
      return slice(start, end)
    if not self.wrap_around:
      raise ValueError(
          f"block({start}, {end}) runs past the end of the training stream: num_train="
          f"{self.num_train} sequences (seq_len {self.seq_len}), wrap_around=False. Set "
          "config.data.wrap_around=True to reuse sequences (position p reads sequence "
          "p mod num_train), or use more data / fewer steps.")
    return np.arange(start, end, dtype=np.int64) % self.num_train

  def _rows(self, start: int, end: int) -> np.ndarray:
    ids = self.sequence_ids(start, end)
    if self._order is None and ids.size and ids[-1] - ids[0] == ids.size - 1:
      return np.asarray(self._windows[int(ids[0]):int(ids[-1]) + 1])  # contiguous: a slice
    return np.asarray(self._windows[ids])

  def _gather(self, pos: slice | np.ndarray, start: int) -> np.ndarray:
    if isinstance(pos, slice):
      rows = self._rows(pos.start, pos.stop)
    else:
      ids = (pos if self._order is None else self._order[pos]).astype(np.int64)
      rows = np.asarray(self._windows[ids])
    self._check(rows, "training position", start)
    return rows.astype(np.int32)

  def _check(self, rows: np.ndarray, what: str, first: int) -> None:
    """Raises if a token id is outside [0, vocab_size) (MMIDIDX data only)."""
    if not self._check_ids or rows.size == 0:
      return
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= self.vocab_size:
      bad = int(np.argmax(((rows < 0) | (rows >= self.vocab_size)).any(axis=1)))
      raise ValueError(
          f"{what} {first + bad} holds token ids in [{lo}, {hi}] but vocab_size is "
          f"{self.vocab_size} (config.data.vocab_size={self._settings.vocab_size}, tokenizer="
          f"{self._settings.tokenizer!r}); set config.data.vocab_size to the vocabulary the "
          "data was tokenised with (the Pythia Pile, GPT-NeoX tokeniser: 50304, Pythia's "
          "padded vocabulary)")


# --- Building ------------------------------------------------------------------------------------

_TOKENS: dict[str, np.ndarray] = {}  # token-cache file -> token stream, once per process


def make_tokenizer(s: DataSettings, docs, corpus_key: str, cache_dir: pathlib.Path):
  """The configured tokeniser (the BPE is trained on `docs` or read from the cache)."""
  if s.tokenizer == "byte":
    return tokenizers.byte_tokenizer()
  if s.tokenizer == "gpt2":
    return tokenizers.gpt2_tokenizer()
  return tokenizers.trained_bpe_tokenizer([d.text for d in docs], corpus_key, s.bpe_vocab_size,
                                          cache_dir)


def token_cache_path(cache_dir: pathlib.Path, corpus_key: str, tokenizer) -> pathlib.Path:
  """Where the token stream of corpus `corpus_key` under `tokenizer` is cached."""
  key = hashlib.sha256(f"{corpus_key}\0{tokenizer.identity}".encode()).hexdigest()
  return cache_dir / "tokens" / f"shakespeare-{tokenizer.name}-{key[:20]}.npy"


def corpus_tokens(docs, corpus_key: str, tokenizer, cache_dir: pathlib.Path) -> np.ndarray:
  """The token stream doc_1 EOT ... doc_n EOT: from memory, the disk cache, or tokenised now."""
  path = token_cache_path(cache_dir, corpus_key, tokenizer)
  key = str(path)
  if key not in _TOKENS:
    tokens = _cache.load_array(path)
    if (tokens is None or tokens.ndim != 1 or tokens.dtype.kind != "u" or not tokens.size or
        int(tokens.max()) >= tokenizer.vocab_size):
      tokens = tokenizer.encode_documents([d.text for d in docs])
      _cache.save_array(path, tokens)
    tokens.flags.writeable = False
    _TOKENS[key] = tokens
  return _TOKENS[key]


def clear_memory_caches() -> None:
  """Forgets tokens, tokenisers and the corpus held in memory (the disk caches stay)."""
  _TOKENS.clear()
  tokenizers.clear_memory_caches()
  corpus._MEMO.clear()  # pylint: disable=protected-access


def _windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
  n = tokens.shape[0] // (seq_len + 1)
  return tokens[:n * (seq_len + 1)].reshape(n, seq_len + 1)  # a view (memmap stays a memmap)


def _sampled_sha256(path: pathlib.Path) -> str:
  """sha256 of a file's size, first MiB and last MiB (identity of files too big to hash)."""
  size = path.stat().st_size
  h = hashlib.sha256(str(size).encode())
  with open(path, "rb") as f:
    h.update(f.read(_SAMPLE_BYTES))
    f.seek(max(0, size - _SAMPLE_BYTES))
    h.update(f.read(_SAMPLE_BYTES))
  return h.hexdigest()


def build_stream(data_config) -> SequenceStream:
  """The sequence stream `config.data` describes.

  Args:
    data_config: `config.data` (keys of `default_data_config`; missing keys take defaults).

  Returns:
    The `SequenceStream`.

  Raises:
    ValueError / TypeError: a bad field (named in the message); mmidx.MMIDIDXError (a
      ValueError) for a missing or malformed MMIDIDX file.
    corpus.CorpusNotInstalledError: source 'shakespeare' without the `shakespeare` package.
  """
  s = parse_data_config(data_config)
  cache_dir = _cache.resolve_cache_dir(s.cache_dir)
  if s.source == "shakespeare":
    docs = corpus.load_corpus()
    corpus_key = corpus.corpus_fingerprint(docs)
    tok = make_tokenizer(s, docs, corpus_key, cache_dir)
    if s.vocab_size and s.vocab_size < tok.vocab_size:
      raise ValueError(f"config.data.vocab_size={s.vocab_size}: must be 0 or >= the "
                       f"{s.tokenizer} tokeniser's {tok.vocab_size}")
    tokens = corpus_tokens(docs, corpus_key, tok, cache_dir)
    return SequenceStream(
        _windows(tokens, s.seq_len), settings=s, vocab_size=s.vocab_size or tok.vocab_size,
        source_identity=f"shakespeare:{corpus_key}", tokenizer_identity=tok.identity,
        tokenizer=tok, check_ids=False, materialize=True,
        description=(f"shakespeare: {len(docs)} texts, {s.tokenizer} tokeniser (vocab "
                     f"{tok.vocab_size:,}), {tokens.size:,} tokens"))
  ds = mmidx.IndexedDataset(s.path)
  if s.shuffle:  # blocks gather scattered sequences: no read-ahead around each page fault
    ds.advise_random_access()
  tokens = ds.contiguous_tokens()
  vocab = s.vocab_size or _STATIC_VOCAB.get(s.tokenizer, s.bpe_vocab_size)
  identity = ":".join(["mmidx", str(ds.dtype_code), str(len(ds)), str(ds.num_doc_idx),
                       str(tokens.size), _sampled_sha256(ds.idx_path),
                       _sampled_sha256(ds.bin_path)])
  return SequenceStream(
      _windows(tokens, s.seq_len), settings=s, vocab_size=vocab, source_identity=identity,
      tokenizer_identity=f"given-ids:{vocab}", tokenizer=None, check_ids=True,
      materialize=False,
      description=(f"mmidx {ds.prefix}: {len(ds):,} entries, {tokens.size:,} {ds.dtype.name} "
                   f"tokens, vocab {vocab:,}"))
