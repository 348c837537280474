"""The one command-line front of the mains (experiments/*.py): flags, config files, errors.

Every main parses its flags with `parse_flags` and reports bad input with `fail`: one line
`error: <what>` on stderr (for a config value, `error: config.<field>=<value>: must be ...`,
from halos_jax/validation.py) and exit status 2, never a traceback or a usage dump. The same
config checks run whichever main reads the config.

`--config=configs/<file>.py[:args]` names a file of this checkout's `configs/`; where that path
does not exist (an installed package, another working directory) it is the package's own copy
(halos_jax/configs/), so `pip install .` then `python -m experiments.train
--config=configs/halos.py:runlocal ...` works from any directory.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, NoReturn

from halos_jax.configs import CONFIGS_DIR

_PREFIX = "configs" + os.sep


def error_line(message: Any) -> str:
  """One line of an error message; of an embedded traceback only its final line."""
  text = str(message)
  marker = "Traceback (most recent call last)"
  if marker in text:
    head, _, tb = text.partition(marker)
    last = [line for line in tb.splitlines() if line.strip() and not line.startswith(" ")]
    text = head.replace("Error whilst parsing config file:", "").strip() + " " + (
        last[-1] if last else "")
  return " ".join(text.split())


def fail(message: Any) -> NoReturn:
  """Prints `error: <one line>` on stderr and exits with status 2."""
  print("error: " + error_line(message), file=sys.stderr, flush=True)
  sys.exit(2)


def resolve_config_path(value: str) -> str:
  """`path[:args]` of a --config flag, with `configs/...` found in the package if not here.

  Raises:
    FileNotFoundError: neither the path nor the package's copy exists.
  """
  path, sep, args = value.partition(":")
  if os.path.isfile(path):
    return value
  norm = os.path.normpath(path)
  if norm.startswith(_PREFIX):
    packaged = CONFIGS_DIR / norm[len(_PREFIX):]
    if packaged.is_file():
      return str(packaged) + sep + args
  raise FileNotFoundError(f"--config={value}: config file {path!r} does not exist")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing where every failure is one `error:` line and exit status 2.

  Use as `app.run(main, flags_parser=cli.parse_flags)`. Covers unknown flags, ill-typed or
  unknown `--config.KEY` overrides, a `--config` file that does not exist, a config file that
  raises (e.g. a typo in its argument, `configs/halos.py:runlocl`) and missing required flags.
  `--help` keeps absl's behaviour.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  argv = list(argv)
  for i, arg in enumerate(argv[1:], start=1):
    try:
      if arg.startswith("--config="):
        argv[i] = "--config=" + resolve_config_path(arg[len("--config="):])
      elif arg == "--config" and i + 1 < len(argv):
        argv[i + 1] = resolve_config_path(argv[i + 1])
    except FileNotFoundError as e:
      fail(e)
  args = argv[1:]
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, (AttributeError, KeyError)):  # a --config.KEY that names no field
      # ConfigDict's message quotes the key (escaped, maybe with a "Did you mean" hint).
      text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
      key = re.search(r"[A-Za-z_][A-Za-z0-9_]*", text)
      key = key.group(0) if key else text
      hint = re.search(r'Did you mean "([^"]+)"', text)
      given = [a for a in args if a.startswith("--config.")]
      named = [a for a in given if key in a.split("=", 1)[0]]
      fail(f"{(named or given or ['--config'])[0]}: unknown config key {key!r}"
           + (f"; did you mean {hint.group(1)!r}?" if hint else
              " (see the config file for the keys it has)"))
    fail(e)


def no_arguments(argv: list[str]) -> None:
  """A main takes flags only: positional arguments are an error."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {argv[1:]}")
