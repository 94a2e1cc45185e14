"""What option values must be: one rule per kind of value, checked alike on the command line and in config files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: A rule: the test a value must pass, and how an error says what it must be.
Rule = tuple[Callable[[Any], bool], str]

POSITIVE: Rule = (lambda v: v > 0, "positive")
AT_LEAST_1: Rule = (lambda v: v >= 1, "at least 1")
NOT_NEGATIVE: Rule = (lambda v: v >= 0, "0 or more")
PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "between 0 and 1")
THRESHOLD: Rule = (lambda v: 0 < v < 1, "above 0 and below 1")


#: The network precisions (``--precision``; ``model.predictor.PRECISIONS`` maps them to torch types), and
#: ``auto``: the fastest one the device runs natively (``model.predictor.resolve_precision``).
PRECISION_NAMES = ("fp32", "bf16", "fp16")
PRECISION_CHOICES = (*PRECISION_NAMES, "auto")


def check(option: str, value: Any, rule: Rule) -> None:
    """ValueError ``OPTION must be ..., got VALUE`` unless ``value`` is None or a number that passes ``rule``."""
    ok, wording = rule
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and ok(value)):
        raise ValueError(f"{option} must be {wording}, got {value}")


def check_precision(name: str) -> None:
    """ValueError ``--precision must be one of ..., got NAME`` unless ``name`` is one of ``PRECISION_CHOICES``."""
    if name not in PRECISION_CHOICES:
        raise ValueError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {name}")
