"""Argument checks shared by the callbacks (no dependency beyond the standard library).

Every message starts with the argument's name, so a caller that builds callbacks from a config (such as
``afl``) can tell which option was wrong.
"""

from __future__ import annotations

import math
from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or a ``ValueError`` naming ``name``.

    Example:
        >>> check_positive_int("max_history", 3)
        3
        >>> check_positive_int("max_history", 0)
        Traceback (most recent call last):
        ...
        ValueError: max_history must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, strict: bool = False) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` if ``strict``), or a ``ValueError`` naming ``name``.

    Example:
        >>> check_number("mu", 0.5, 0.0)
        0.5
        >>> check_number("alpha", float("nan"), 0.0)
        Traceback (most recent call last):
        ...
        ValueError: alpha must be a finite number >= 0.0, got nan
    """
    bound = f"{'>' if strict else '>='} {low}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)
