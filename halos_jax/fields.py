"""What a config value may be: one definition of each rule, and the error that names it.

A rule is `(predicate, allowed)`: `allowed` says in words what passes ("an integer >= 1").
`check(name, value, rule)` returns the value or raises `FieldError` with the message
`<name>=<value>: must be <allowed>` (one line; the value shortened). The objects that own a
field check it with these rules (the scheduler's settings, the validation of a run config), so
a field has one rule wherever it is checked. Plain Python.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

Rule = tuple[Callable[[Any], bool], str]


class FieldError(ValueError):
  """A value that breaks its field's rule, or another problem with a named field.

  Attributes:
    field: the field's name (or dotted path); None for a problem not about one value.
    value: the value given.
    allowed: what the rule allows, in words.
  """

  def __init__(self, message: str, *, field: str | None = None, value: Any = None,
               allowed: str | None = None):
    super().__init__(message)
    self.field, self.value, self.allowed = field, value, allowed

  @classmethod
  def invalid(cls, field: str, value: Any, allowed: str) -> "FieldError":
    return cls(f"{field}={short(value)}: must be {allowed}", field=field, value=value,
               allowed=allowed)


def short(v: Any, limit: int = 100) -> str:
  """repr(v), shortened (and safe for integers too long to print)."""
  try:
    text = repr(v)
  except ValueError:  # an int beyond sys.get_int_max_str_digits()
    text = f"<integer of {v.bit_length()} bits>"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def integer(low: int, high: int | None = None) -> Rule:
  allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
  return (lambda v: is_int(v) and v >= low and (high is None or v <= high)), allowed


def real(low: float, high: float = math.inf, *, low_open=False, high_open=False,
         allow_inf=False) -> Rule:
  """A real number in the interval; finite unless allow_inf (then high may be inf)."""
  if high == math.inf:
    allowed = f"a {'' if allow_inf else 'finite '}number {'>' if low_open else '>='} {low:g}"
  else:
    allowed = ("a number in " + ("(" if low_open else "[") + f"{low:g}, {high:g}" +
               (")" if high_open else "]"))

  def ok(v):
    if not is_real(v) or math.isnan(v) or (math.isinf(v) and not allow_inf):
      return False
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
  return ok, allowed


def one_of(options) -> Rule:
  options = tuple(options)
  return (lambda v: isinstance(v, str) and v in options), "one of " + ", ".join(options)


def optional(rule: Rule) -> Rule:
  ok, allowed = rule
  return (lambda v: v is None or ok(v)), f"None or {allowed}"


# The named rules, used by the config's validation and by the optimizers' argument checks alike.
BOOL: Rule = ((lambda v: isinstance(v, (bool, np.bool_))), "True or False")
POSITIVE = real(0.0, low_open=True)  # learning rates, times
NONNEGATIVE = real(0.0)  # eps, weight decay
POSITIVE_OR_INF = real(0.0, low_open=True, allow_inf=True)  # clipping threshold (inf: off)
UNIT = real(0.0, 1.0)  # [0, 1]: alpha, min_lr_ratio
MOMENTUM = real(0.0, 1.0, high_open=True)  # [0, 1): momenta, Adam betas
INT0, INT1 = integer(0), integer(1)


def check(name: str, value: Any, rule: Rule, error: type[FieldError] = FieldError) -> Any:
  """`value` if it passes `rule`, else raises `error.invalid(name, value, allowed)`."""
  ok, allowed = rule
  if not ok(value):
    raise error.invalid(name, value, allowed)
  return value
