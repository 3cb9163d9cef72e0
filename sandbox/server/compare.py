"""Host-side comparison of what a program returned or printed with what was expected.

Expected values never enter the container, so a candidate cannot read them, and the
comparison runs here, on values decoded from a tagged encoding of exact builtin types
(``harness._encode``): an object that claims to equal everything cannot even be sent.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from sandbox.domain import CompareMode

_DEFAULT_IO_TOLERANCE = 1e-6


class DecodeError(ValueError):
    """A value from the container is not in the tagged encoding."""


def decode(value: Any, depth: int = 0) -> Any:
    """Python value of the tagged encoding; raises DecodeError on anything else."""
    if depth > 200:
        raise DecodeError("value nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise DecodeError(f"unexpected encoded value {str(value)[:80]!r}")
    ((tag, body),) = value.items()
    try:
        if tag == "i":
            return int(body)
        if tag == "f":
            return float(body)
        if tag == "c":
            return complex(float(body[0]), float(body[1]))
        if tag == "b":
            return base64.b64decode(body, validate=True)
        if tag == "l":
            return [decode(v, depth + 1) for v in body]
        if tag == "t":
            return tuple(decode(v, depth + 1) for v in body)
        if tag == "s":
            return _FrozenMultiset(decode(v, depth + 1) for v in body)
        if tag == "d":
            return {_hashable(decode(k, depth + 1)): decode(v, depth + 1) for k, v in body}
    except (TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"malformed {tag!r} value: {exc}") from None
    raise DecodeError(f"unknown tag {tag!r}")


class _FrozenMultiset(list[Any]):
    """A decoded set: compared with an expected array in any order."""


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if tol <= 0:
        return a == b
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def values_equal(actual: Any, expected: Any, tol: float = 0.0) -> bool:
    """Type-checked equality of a decoded value with an expected JSON value.

    bool matches only bool; int and float match each other numerically (within
    ``tol`` when set); lists and tuples match JSON arrays element by element; a set
    matches an array with the same elements in any order; dict keys compare as JSON
    object keys (strings) or as decoded keys.
    """
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if isinstance(expected, int) and isinstance(actual, int):
            return actual == expected
        return _close(float(actual), float(expected), tol)
    if isinstance(expected, str) or isinstance(actual, str):
        return type(actual) is str and type(expected) is str and actual == expected
    if isinstance(actual, _FrozenMultiset):
        if not isinstance(expected, list) or len(expected) != len(actual):
            return False
        remaining = list(expected)
        for item in actual:
            for j, candidate in enumerate(remaining):
                if values_equal(item, candidate, tol):
                    del remaining[j]
                    break
            else:
                return False
        return True
    if isinstance(actual, (list, tuple)):
        return (
            isinstance(expected, list)
            and len(actual) == len(expected)
            and all(values_equal(a, e, tol) for a, e in zip(actual, expected, strict=False))
        )
    if isinstance(actual, dict):
        if not isinstance(expected, dict) or len(actual) != len(expected):
            return False
        keyed = {str(k) if not isinstance(k, str) else k: v for k, v in actual.items()}
        return all(k in keyed and values_equal(keyed[k], v, tol) for k, v in expected.items())
    return bool(actual == expected) and type(actual) is type(expected)


def outputs_equal(actual: str, expected: str, mode: CompareMode, tol: float = 0.0) -> bool:
    """Compares a program's stdout with the expected one."""
    if mode is CompareMode.EXACT:
        return actual == expected
    if mode is CompareMode.WHITESPACE:
        return _lines(actual) == _lines(expected)
    a_tokens, e_tokens = actual.split(), expected.split()
    if len(a_tokens) != len(e_tokens):
        return False
    tol = tol or _DEFAULT_IO_TOLERANCE
    for a, e in zip(a_tokens, e_tokens, strict=False):
        if a == e:
            continue
        try:
            if not _close(float(a), float(e), tol):
                return False
        except ValueError:
            return False
    return True


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
