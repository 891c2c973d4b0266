"""Errors a user can cause, and the helpers that word them. A leaf: imports nothing of the package.

Every message is one line that says what is wrong and what to do; values a user typed are shown
shortened (`short`), so that a huge or hostile value can never produce a huge message.
"""
import difflib
from typing import Any, Iterable


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message says what is wrong and what to do."""


class DataError(RuntimeError):
    """Data files missing or unreadable; the message says where they should be."""


MAX_SHOWN = 60  # characters of a user's value shown in a message


def short(value: Any, limit: int = MAX_SHOWN) -> str:
    """repr(value), cut to `limit` characters (with the length it had) and kept on one line."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clip(text: str, limit: int = 200) -> str:
    """A message text (not a value: no quotes added) on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def unknown(what: str, value: Any, valid: Iterable[str]) -> str:
    """'unknown dataset 'svhn' (did you mean ...?); valid: a, b, c'."""
    names = sorted(valid)
    close = difflib.get_close_matches(str(value)[:100], names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {short(value)}{hint}; valid: {', '.join(names)}"
