"""The account aggregate, model-checked: every actor and provider answer, in any order (see tests/support/account_model.py).

`make test` runs a budget of about a minute; `python -m bench.model --examples N` runs a long one.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.support.account_model import AccountMachine

AccountMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "400")),
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
TestAccountModel = AccountMachine.TestCase
