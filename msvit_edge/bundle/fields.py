"""What the records' readers (bundle and engine manifests, precision facts) check a parsed JSON value for, and how
their messages name a value's type."""

from __future__ import annotations

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def json_type(value: object) -> str:
    """``value``'s JSON type as a message says it ("a number", "an array", ...)."""
    if is_number(value):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def is_int(value: object) -> bool:
    """An integer, not a boolean (JSON's true is Python's 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers(values: object) -> bool:
    """A list of numbers."""
    return isinstance(values, list) and all(is_number(v) for v in values)


def text_map(value: object) -> bool:
    """An object of strings to strings (file -> sha256, stage -> file)."""
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def optional(value: object, kind: type | tuple[type, ...]) -> bool:
    """Absent (None) or of ``kind``."""
    return value is None or isinstance(value, kind)
