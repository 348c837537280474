"""Session fixtures of the halos_jax.data tests: one cache folder, the corpus, built once."""
import functools

import numpy as np
import pytest

from halos_jax import data
from halos_jax.data import _cache
from halos_jax.data import corpus
from halos_jax.data import tokenizers

# A small real corpus for the BPE and GPT-2 stream tests: the first 30,000 characters of four
# plays (training a 1k BPE and tokenising take well under a second on it).
MINI_NAMES = ("hamlet", "macbeth", "sonnets", "tempest")
MINI_CHARS = 30_000


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
  """A fresh cache folder shared by the session (tokeniser and token caches)."""
  return str(tmp_path_factory.mktemp("halos_data_cache"))


@pytest.fixture(scope="session")
def docs():
  """The cleaned corpus (42 documents)."""
  return corpus.load_corpus()


@pytest.fixture(scope="session")
def mini_docs(docs):
  by_name = {d.name: d for d in docs}
  return tuple(corpus.Document(n, by_name[n].text[:MINI_CHARS]) for n in MINI_NAMES)


def _config(cache_dir: str, **overrides):
  c = data.default_data_config()
  c.cache_dir = cache_dir
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="session")
def make_config(cache_dir):
  """make_config(**overrides) -> the default `config.data` using the session cache folder."""
  return functools.partial(_config, cache_dir)


@pytest.fixture(scope="session")
def byte_stream(make_config):
  """The default stream (byte tokens, seq_len 256, 64 validation sequences, seed 0)."""
  return data.build_stream(make_config())


@pytest.fixture(scope="session")
def byte_tokens(docs) -> np.ndarray:
  """The byte token stream built independently of the library: doc_1 0x03 doc_2 0x03 ..."""
  raw = b"".join(d.text.encode("utf-8") + b"\x03" for d in docs)
  return np.frombuffer(raw, np.uint8)


@pytest.fixture(scope="session")
def gpt2():
  return tokenizers.gpt2_tokenizer()


@pytest.fixture(scope="session")
def small_bpe(mini_docs, cache_dir):
  """A 1,024-token BPE trained on the mini corpus (cached in the session cache folder)."""
  key = corpus.corpus_fingerprint(mini_docs)
  return tokenizers.trained_bpe_tokenizer([d.text for d in mini_docs], key, 1024,
                                          _cache.resolve_cache_dir(cache_dir))
