"""Who may be named as an operator: one rule for the admin's usernames and the API's `X-Operator`.

The rule is Django's own username rule (`UnicodeUsernameValidator`, 150 characters): Unicode
letters and digits plus `@ . + - _`, so `анна`, `anna+ops` and `maria@cinema.ru` are operators and
the admin never holds a user the API refuses (decision 0109). HTTP header values are latin-1 on the
wire, so `X-Operator` carries the name percent-encoded as UTF-8 (RFC 3986): names in plain ASCII
travel unchanged, `анна` travels as `%D0%B0%D0%BD%D0%BD%D0%B0`. `%` is never part of a name, so
decoding is unambiguous. Standard library only, like the rest of `schemas/`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

OPERATOR_NAME_MAX = 150
OPERATOR_NAME_PATTERN = r"^[\w.@+-]{1,150}\Z"
"""For `re` (Unicode `\\w`); `\\Z`, not `$`, so a trailing newline is not a name."""
_NAME = re.compile(OPERATOR_NAME_PATTERN)
_SAFE = "@.+-_"
OPERATOR_HEADER_MAX = OPERATOR_NAME_MAX * 4 * 3  # every character 4 UTF-8 bytes, every byte %XX


def operator_name_error(name: str) -> str | None:
    """Why `name` cannot name an operator, or None when it can (the sentence is shown to people)."""
    if not name:
        return "an operator name cannot be empty"
    if len(name) > OPERATOR_NAME_MAX:
        return f"an operator name has at most {OPERATOR_NAME_MAX} characters"
    if not _NAME.match(name):
        return "an operator name may contain only letters, digits and @ . + - _ (no spaces)"
    return None


def is_operator_name(name: str) -> bool:
    return operator_name_error(name) is None


def encode_operator_header(name: str) -> str:
    """The `X-Operator` value for `name`: ASCII names as they are, anything else %XX of its UTF-8."""
    return quote(name, safe=_SAFE, encoding="utf-8", errors="strict")


def decode_operator_header(value: str) -> str:
    """The operator named by an `X-Operator` value; ValueError (with a reason) when it names nobody valid."""
    if not value.isascii():
        raise ValueError("X-Operator must be ASCII: percent-encode a name with other characters as UTF-8 (%D0%B0...)")
    try:
        name = unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError("X-Operator's percent-encoding is not UTF-8") from None
    problem = operator_name_error(name)
    if problem is not None:
        raise ValueError(f"X-Operator does not name an operator: {problem}")
    return name
