"""The pure domain of the processor: state from events, decisions from commands. No I/O here.

`state` folds events; `decide` answers commands (the deciders live in `commands`); `answers`
turns what YooKassa said into events (with `payments` and `refunds`); `decision` holds what they
share; `envelopes` wraps decided events; `provider` is the vocabulary spoken with YooKassa.
"""

from payment_processor.domain.answers import resolve
from payment_processor.domain.decide import decide, decide_plan, decide_promo
from payment_processor.domain.decision import Context, Decision, Emit, command_id_of, failed_command, terminal_outcome
from payment_processor.domain.envelopes import OperationChange, operation_changes, to_envelopes
from payment_processor.domain.provider import (
    CreatePayment,
    CreateRefund,
    FindPayment,
    FindRefund,
    ProviderOutcome,
    ProviderPayment,
    ProviderRefund,
    ProviderRefused,
    ProviderStep,
    ProviderUnknown,
)
from payment_processor.domain.promo import PromoState, account_emits, apply_promo, build_promo, promo_envelopes
from payment_processor.domain.state import AccountState, PlanState, apply, apply_plan, build_account, build_plan

__all__ = [
    "AccountState", "Context", "CreatePayment", "CreateRefund", "Decision", "Emit", "FindPayment", "FindRefund",
    "OperationChange", "PlanState", "ProviderOutcome", "ProviderPayment", "ProviderRefund", "ProviderRefused",
    "ProviderStep", "ProviderUnknown", "apply", "apply_plan", "build_account", "build_plan", "command_id_of",
    "decide", "decide_plan", "decide_promo", "PromoState", "account_emits", "apply_promo", "build_promo", "promo_envelopes", "failed_command", "operation_changes", "resolve", "terminal_outcome", "to_envelopes",
]
