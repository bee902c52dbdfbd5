"""Exact fixed-point decimals as plain integers, so that a float can never sneak in.

A decimal string such as ``"2683.80000000"`` becomes an ``int`` counting units of
``10**-SCALE`` (``SCALE`` = 18, enough for every crypto price and quantity seen in the wild) and the
number of decimals it was printed with. Integers compare, add and hash fast (they key the
``SortedDict`` of a book), and arithmetic on them is exact. Formatting follows ``decimal.Decimal``
for plain notation: a sum keeps the largest number of decimals of its terms, a product the sum of
its factors' decimals, so results print as a Decimal-based reference would print them.

>>> u = to_units("2683.80")
>>> u, decimals("2683.80")
(2683800000000000000000, 2)
>>> fmt(u + to_units("0.015"), 3)
'2683.815'
>>> fmt(to_units("2") * to_units("0.25"), 2, SCALE * 2)
'0.50'
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "MAX_CHARS",
    "ONE",
    "SCALE",
    "DecimalError",
    "decimals",
    "fmt",
    "parse",
    "round_half_even",
    "to_decimal",
    "to_units",
]

SCALE = 18
ONE = 10**SCALE
MAX_CHARS = 100  # longest decimal string accepted (operators/_native.c has the same bound)
_POW = [10**i for i in range(2 * SCALE + 1)]
_NUMBER = re.compile(r"-?[0-9]+(?:\.([0-9]*))?\Z")


class DecimalError(ValueError):
    """A string is not a plain decimal number we can hold exactly."""


def parse(text: str, max_chars: int | None = MAX_CHARS) -> tuple[int, int]:
    """Return ``(units, decimals)`` for a plain decimal string; raise ``DecimalError`` otherwise.

    Exponents, ``NaN``, ``inf``, blanks, more than ``SCALE`` decimals and more than ``MAX_CHARS``
    characters are refused: each would either lose precision or mean that the producer sent
    something we do not understand. ``max_chars=None`` is for the project's own sums (a book's
    quantity added up by ``insert`` events may grow past what an input may carry).
    """
    if type(text) is not str:
        raise DecimalError(f"expected a decimal string, got {type(text).__name__}")
    if max_chars is not None and len(text) > max_chars:  # keeps int() below its digit limit
        raise DecimalError(f"more than {MAX_CHARS} characters: {text[:40]!r}...")
    m = _NUMBER.match(text)
    if m is None:
        raise DecimalError(f"not a plain decimal number: {text[:40]!r}")
    frac = m.group(1)
    if frac is None:
        return int(text) * ONE, 0
    dp = len(frac)
    if dp > SCALE:
        raise DecimalError(f"more than {SCALE} decimal places: {text[:40]!r}")
    if dp == 0:
        return int(text[:-1]) * ONE, 0
    return int(text.replace(".", "")) * _POW[SCALE - dp], dp


def to_units(text: str) -> int:
    """Units of ``10**-SCALE`` in ``text`` (see :func:`parse`)."""
    return parse(text)[0]


def decimals(text: str) -> int:
    """Number of decimals ``text`` was printed with."""
    return parse(text)[1]


def fmt(units: int, dp: int, scale: int = SCALE) -> str:
    """Print ``units`` (of ``10**-scale``) with exactly ``dp`` decimals.

    ``dp`` must be at least the number of significant decimals of the value (true for results of
    addition and multiplication when ``dp`` follows the Decimal rules above); anything else would
    have to round, and that is a bug: raise rather than print a wrong number.
    """
    if units >= 0 and 0 < dp <= scale:  # the common case, in short
        q, r = divmod(units, _POW[scale - dp])
        if not r:
            s = str(q)
            if len(s) <= dp:
                s = s.rjust(dp + 1, "0")
            return f"{s[:-dp]}.{s[-dp:]}"
    if dp > scale:
        units *= _POW[dp - scale]
        scale = dp
    q, r = divmod(abs(units), _POW[scale - dp])
    if r:
        raise DecimalError(f"{units}e-{scale} does not fit in {dp} decimals")
    sign = "-" if units < 0 else ""
    if dp == 0:
        return f"{sign}{q}"
    s = str(q).rjust(dp + 1, "0")
    return f"{sign}{s[:-dp]}.{s[-dp:]}"


fmt_py = fmt  # the reference; tests/test_native.py checks the compiled fmt against it
try:  # the same function in C where built (operators/_native.c): records call it twice or more
    from operators import _native

    _native.set_fmt_fallback(fmt_py)
    fmt = _native.fmt
except ImportError:
    pass


def round_half_even(numerator: int, denominator: int, dp: int) -> str:
    """``numerator / denominator`` rounded half-even, printed with exactly ``dp`` decimals.

    Exact: integer division only, Decimal does the tie-breaking on an exact fraction.

    >>> round_half_even(1, 8, 2), round_half_even(3, 8, 2), round_half_even(-1, 3, 4)
    ('0.12', '0.38', '-0.3333')
    """
    if denominator == 0:
        raise DecimalError("division by zero")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    scaled = numerator * _POW[dp]
    q, r = divmod(abs(scaled), denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    value = q if scaled >= 0 else -q
    return fmt(value, dp, dp)


def to_decimal(units: int, scale: int = SCALE) -> Decimal:
    """For tests and references only: the exact ``Decimal`` of ``units``."""
    return Decimal(units).scaleb(-scale)

