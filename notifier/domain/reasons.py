"""Human sentences for YooKassa's cancellation reasons and the billing's own reason codes.

An email must say why in words a person understands, never `3d_secure_failed`. Unknown codes get a
generic sentence (the code is still logged and tagged), so a new provider reason never blocks an email.
"""

from __future__ import annotations

PAYMENT_REASONS: dict[str, dict[str, str]] = {
    "insufficient_funds": {
        "ru": "На карте недостаточно средств.",
        "en": "There were not enough funds on the card.",
    },
    "card_expired": {
        "ru": "Срок действия карты истёк.",
        "en": "The card has expired.",
    },
    "fraud_suspected": {
        "ru": "Платёж заблокирован из-за подозрения в мошенничестве. Обратитесь в ваш банк.",
        "en": "The payment was blocked on suspicion of fraud. Please contact your bank.",
    },
    "3d_secure_failed": {
        "ru": "Не удалось пройти проверку 3-D Secure (подтверждение платежа кодом от банка).",
        "en": "The 3-D Secure check (confirming the payment with your bank's code) did not succeed.",
    },
    # the processor's reason when a scheduled retry finds the customer's own pay-now page open (0117)
    "the customer's own payment for this period is open; it is not charged again": {
        "ru": "Вы как раз оплачиваете подписку на странице оплаты, поэтому мы не стали списывать деньги повторно.",
        "en": "You are paying for the subscription on the payment page right now, so we did not charge the card again.",
    },
    "expired_on_confirmation": {
        "ru": "Оплата не была завершена: страница оплаты была закрыта или время на оплату истекло.",
        "en": "The payment was not completed: the payment page was left or the time to pay ran out.",
    },
    "expired_on_capture": {
        "ru": "Платёж не был подтверждён вовремя и отменён.",
        "en": "The payment was not confirmed in time and was canceled.",
    },
    "general_decline": {
        "ru": "Банк отклонил платёж без объяснения причин.",
        "en": "Your bank declined the payment without giving a reason.",
    },
    "call_issuer": {
        "ru": "Банк отклонил платёж. Позвоните в ваш банк, чтобы узнать причину.",
        "en": "Your bank declined the payment. Please call your bank to find out why.",
    },
    "canceled_by_merchant": {
        "ru": "Платёж отменён магазином.",
        "en": "The payment was canceled by the shop.",
    },
    "invalid_card_number": {
        "ru": "Номер карты указан неверно.",
        "en": "The card number was wrong.",
    },
    "invalid_csc": {
        "ru": "Код CVV2/CVC2 указан неверно.",
        "en": "The card security code (CVV2/CVC2) was wrong.",
    },
    "issuer_unavailable": {
        "ru": "Банк, выпустивший карту, был недоступен.",
        "en": "The bank that issued the card could not be reached.",
    },
    "payment_method_limit_exceeded": {
        "ru": "Превышен лимит платежей по карте.",
        "en": "The card's payment limit was exceeded.",
    },
    "payment_method_restricted": {
        "ru": "Операции по карте ограничены банком.",
        "en": "Your bank has restricted payments with this card.",
    },
    "country_forbidden": {
        "ru": "Оплата картой, выпущенной в этой стране, недоступна.",
        "en": "Cards issued in this country cannot be used for this payment.",
    },
    "permission_revoked": {
        "ru": "Разрешение на автоплатежи с этой карты отозвано.",
        "en": "Permission for automatic payments with this card was withdrawn.",
    },
    "internal_timeout": {
        "ru": "Платёжная система не успела обработать платёж.",
        "en": "The payment system could not process the payment in time.",
    },
    "identification_required": {
        "ru": "Для оплаты нужна идентификация кошелька.",
        "en": "The wallet must be identified before it can pay.",
    },
    "deal_expired": {
        "ru": "Срок сделки истёк.",
        "en": "The deal has expired.",
    },
    "no_payment_method": {
        "ru": "Нет сохранённой карты для автоматического списания.",
        "en": "There is no saved card to charge automatically.",
    },
}

GENERIC_PAYMENT_REASON = {
    "ru": "Платёж не прошёл.",
    "en": "The payment did not go through.",
}

REFUND_FAILED_GENERIC = {
    "ru": "Платёжная система отклонила возврат.",
    "en": "The payment system declined the refund.",
}

EXPIRY_REASONS: dict[str, dict[str, str]] = {
    "auto_renew_off": {
        "ru": "Автопродление было выключено.",
        "en": "Auto-renewal was turned off.",
    },
    "canceled_at_period_end": {
        "ru": "Подписка была отменена с окончанием оплаченного периода.",
        "en": "The subscription was canceled to end with the paid period.",
    },
    "at_period_end": {
        "ru": "Подписка была отменена с окончанием оплаченного периода.",
        "en": "The subscription was canceled to end with the paid period.",
    },
    "no_payment_method": {
        "ru": "Нет сохранённой карты для продления.",
        "en": "There was no saved card to renew it with.",
    },
    "renewal_failed": {
        "ru": "Не удалось списать оплату за продление.",
        "en": "We could not charge the renewal.",
    },
    "dunning_exhausted": {
        "ru": "Не удалось списать оплату за продление.",
        "en": "We could not charge the renewal.",
    },
    "period_ended": {
        "ru": "Оплаченный период закончился.",
        "en": "The paid period has ended.",
    },
}

GENERIC_EXPIRY_REASON = {
    "ru": "Оплаченный период закончился.",
    "en": "The paid period has ended.",
}


def payment_reason(code: str | None, locale: str) -> str:
    """A sentence for a YooKassa cancellation reason (or a renewal failure code); generic if unknown."""
    return PAYMENT_REASONS.get(code or "", GENERIC_PAYMENT_REASON)[locale]


def expiry_reason(code: str | None, locale: str) -> str:
    return EXPIRY_REASONS.get(code or "", GENERIC_EXPIRY_REASON)[locale]


def refund_failure_reason(code: str | None, locale: str) -> str:
    """Refunds fail for provider reasons that overlap the payment ones; otherwise a generic sentence."""
    if code and code in PAYMENT_REASONS:
        return PAYMENT_REASONS[code][locale]
    return REFUND_FAILED_GENERIC[locale]
