"""One operator-name rule for the admin's usernames and the API's `X-Operator` (schemas/operators.py).

If Django's username rule and the API's rule drift apart again, an operator Django lets in is
refused by the API on every action; these cases pin them together.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError

from schemas.operators import (
    OPERATOR_HEADER_MAX,
    decode_operator_header,
    encode_operator_header,
    is_operator_name,
    operator_name_error,
)

NAMES = ["анна", "anna+ops", "maria@cinema.ru", "o.petrov-2", "_svc", "Ёжик", "李雷", "x" * 150,
         "anna smith", "anna\n", "", "x" * 151, "anna%41", "anna/ops", "anna:ops", "a\x00", "анна!"]


def _django_accepts(name: str) -> bool:
    if not name or len(name) > 150:  # the username field's max_length
        return False
    try:
        UnicodeUsernameValidator()(name)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_the_rule_is_djangos_username_rule(name: str) -> None:
    assert is_operator_name(name) == _django_accepts(name), name


@pytest.mark.parametrize("name", [n for n in NAMES if is_operator_name(n)])
def test_every_valid_name_travels_in_a_latin1_header_and_comes_back(name: str) -> None:
    value = encode_operator_header(name)
    assert value.isascii() and len(value) <= OPERATOR_HEADER_MAX
    assert decode_operator_header(value) == name


def test_ascii_names_travel_as_they_are() -> None:
    assert encode_operator_header("anna+ops") == "anna+ops"
    assert encode_operator_header("анна") == "%D0%B0%D0%BD%D0%BD%D0%B0"


@pytest.mark.parametrize("value, reason", [
    ("anna smith", "no spaces"), ("anna%20smith", "no spaces"), ("%FF", "not UTF-8"),
    ("анна", "must be ASCII"), ("", "cannot be empty"), ("anna%0A", "letters, digits"),
])
def test_a_header_naming_nobody_valid_says_why(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_operator_header(value)
    assert operator_name_error("a b") is not None
