"""The pure domain of the processor: state from events, decisions from commands. No I/O here."""

from payment_processor.domain.decide import (
    Context,
    Decision,
    Emit,
    command_id_of,
    decide,
    decide_plan,
    failed_command,
    resolve,
    terminal_outcome,
)
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
from payment_processor.domain.state import AccountState, PlanState, apply, apply_plan, build_account, build_plan

__all__ = [
    "AccountState", "Context", "CreatePayment", "CreateRefund", "Decision", "Emit", "FindPayment", "FindRefund",
    "OperationChange", "PlanState", "ProviderOutcome", "ProviderPayment", "ProviderRefund", "ProviderRefused",
    "ProviderStep", "ProviderUnknown", "apply", "apply_plan", "build_account", "build_plan", "command_id_of",
    "decide", "decide_plan", "failed_command", "operation_changes", "resolve", "terminal_outcome", "to_envelopes",
]
