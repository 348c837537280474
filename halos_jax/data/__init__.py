"""halos_jax.data: the embedded corpus, tokenisers, the MMIDIDX reader and the sequence stream.

Plain numpy (no JAX). The replay needs only `build_stream(config.data)`:

  stream = build_stream(config.data)
  batch = stream.block(start, end)  # int32 (end - start, seq_len + 1), inputs [:-1], targets [1:]
  val = stream.validation()         # int32 (val_sequences, seq_len + 1), disjoint from training

See docs/data.md for the corpus, the tokenisers, the stream layout and pointing a run at the Pile.
"""
from halos_jax.data import corpus
from halos_jax.data import mmidx
from halos_jax.data import stream
from halos_jax.data import tokenizers
from halos_jax.data.corpus import CorpusNotInstalledError
from halos_jax.data.corpus import Document
from halos_jax.data.corpus import load_corpus
from halos_jax.data.mmidx import IndexedDataset
from halos_jax.data.mmidx import MMIDIDXError
from halos_jax.data.mmidx import write_mmidx
from halos_jax.data.stream import build_stream
from halos_jax.data.stream import DataSettings
from halos_jax.data.stream import default_data_config
from halos_jax.data.stream import parse_data_config
from halos_jax.data.stream import SequenceStream
from halos_jax.data.tokenizers import byte_tokenizer
from halos_jax.data.tokenizers import gpt2_tokenizer

__all__ = [
    "corpus",
    "mmidx",
    "stream",
    "tokenizers",
    "CorpusNotInstalledError",
    "Document",
    "load_corpus",
    "IndexedDataset",
    "MMIDIDXError",
    "write_mmidx",
    "build_stream",
    "DataSettings",
    "default_data_config",
    "parse_data_config",
    "SequenceStream",
    "byte_tokenizer",
    "gpt2_tokenizer",
]
