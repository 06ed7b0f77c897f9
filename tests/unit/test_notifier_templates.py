"""Every email template renders, in both languages, with the values the user must see."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from notifier.domain.emails import EMAIL_KINDS, EmailPlan, Facts, Skip, plan_email
from notifier.domain.formatting import NBSP, FormattingError, format_day, format_moment, format_money
from notifier.domain.reasons import PAYMENT_REASONS, payment_reason
from notifier.adapters.rendering import TEMPLATES, Renderer, RenderError
from schemas import AppliedPromo, Money
from tests.support.notifier_events import Account

RUB = Money(amount="1490.00", currency="RUB")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


# ---------------------------------------------------------------- money and dates


def test_money_russian_uses_no_break_spaces() -> None:
    assert format_money(RUB, "ru") == f"1{NBSP}490,00{NBSP}₽"
    assert format_money(Money(amount="1234567.05"), "ru") == f"1{NBSP}234{NBSP}567,05{NBSP}₽"
    assert format_money(Money(amount="0.01"), "ru") == f"0,01{NBSP}₽"


def test_money_english_puts_a_space_after_a_letter_code() -> None:
    assert format_money(RUB, "en") == f"RUB{NBSP}1,490.00"
    assert format_money(Money(amount="1490.00", currency="USD"), "en") == "$1,490.00"
    assert format_money(Money(amount="0.00"), "en") == f"RUB{NBSP}0.00"


def test_money_refuses_an_unknown_currency() -> None:
    with pytest.raises(FormattingError, match="unknown currency"):
        format_money(Money(amount="1.00", currency="ZZZ"), "ru")


def test_dates_in_moscow_time_per_locale() -> None:
    late_evening_utc = datetime(2026, 3, 5, 21, 30, tzinfo=timezone.utc)  # already March 6 in Moscow
    assert format_day(late_evening_utc, "ru") == "6 марта 2026"
    assert format_day(late_evening_utc, "en") == "March 6, 2026"
    assert format_moment(late_evening_utc, "ru") == "6 марта 2026, 00:30 (МСК)"
    assert format_moment(late_evening_utc, "en") == "March 6, 2026, 00:30 (Moscow time)"
    assert format_moment(late_evening_utc, "en", "UTC") == "March 5, 2026, 21:30 (UTC+00:00)"


def test_every_known_reason_has_both_languages() -> None:
    for code, sentences in PAYMENT_REASONS.items():
        assert set(sentences) == {"ru", "en"}, code
        assert all(s.endswith(".") for s in sentences.values()), code
    assert payment_reason("something_new", "en") == "The payment did not go through."
    assert "страница оплаты" in payment_reason("expired_on_confirmation", "ru")


# ---------------------------------------------------------------- which event → which email


def test_each_money_movement_has_exactly_one_trigger() -> None:
    account = Account()
    assert isinstance(plan_email(account.payment_succeeded()), Skip)  # emailed on SubscriptionActivated
    assert isinstance(plan_email(account.payment_succeeded(purpose="renewal")), Skip)  # on SubscriptionRenewed
    assert isinstance(plan_email(account.payment_failed(purpose="renewal")), Skip)  # on RenewalFailed
    assert isinstance(plan_email(account.payment_succeeded(purpose="upgrade")), Skip)  # on PlanSwitched
    assert isinstance(plan_email(account.payment_failed(purpose="upgrade")), Skip)  # a declined upgrade changes nothing
    assert isinstance(plan_email(account.checkout_started()), Skip)
    assert isinstance(plan_email(account.auto_renew_changed(True)), Skip)
    assert isinstance(plan_email(account.activated(granted=True, payment_id=None, reason="gift")), Skip)
    for kind, event in account.every_email().items():
        plan = plan_email(event)
        assert isinstance(plan, EmailPlan) and plan.kind == kind


def test_card_checks_are_emailed_with_what_they_were_for_never_on_their_own() -> None:
    account = Account()
    assert isinstance(plan_email(account.payment_succeeded(purpose="card_check")), Skip)
    assert isinstance(plan_email(account.payment_failed(purpose="card_check")), Skip)
    assert isinstance(plan_email(account.refund_succeeded(), Facts(card_check=True)), Skip)
    assert isinstance(plan_email(account.refund_failed(), Facts(card_check=True)), EmailPlan)  # a check not returned is news


def test_trial_emails_say_when_the_first_charge_happens_and_how_much(renderer: Renderer) -> None:
    for locale, price, day in (("ru", "1\u00a0490,00\u00a0₽", "12 марта 2026"), ("en", "RUB\u00a01,490.00", "March 12, 2026")):
        account = Account(locale=locale, plan_name="Trial")
        email = renderer.render(plan_email(account.trial_started()))  # type: ignore[arg-type]
        assert price in email.text and day in email.text, email.text
        soon = account.expiring_soon(auto_renew=True, trial=True, next_charge=Money(amount="1490.00"), period_end=account.trial_started().data.period_end)  # type: ignore[union-attr]
        email = renderer.render(plan_email(soon, Facts(plan_name="Trial")))  # type: ignore[arg-type]
        assert price in email.text and ("Пробный" in email.subject or "trial" in email.subject)


def test_an_event_without_customer_is_skipped_with_a_reason() -> None:
    decision = plan_email(Account().refund_succeeded(customer=None))
    assert isinstance(decision, Skip) and "customer" in decision.reason


def test_recipient_language_and_user_come_from_the_event() -> None:
    account = Account(locale="en", email="anna@example.com")
    plan = plan_email(account.renewed())
    assert isinstance(plan, EmailPlan)
    assert (plan.to, plan.locale, plan.user_id) == ("anna@example.com", "en", account.user_id)


# ---------------------------------------------------------------- every template


def _rendered_all(renderer: Renderer, locale: str, plan_name: str):
    account = Account(locale=locale, plan_name=plan_name)
    facts = Facts(plan_name=plan_name, days_used=6, days_in_period=30)
    events = {
        **account.every_email(),
        "canceled_at_period_end": account.canceled("at_period_end"),
        "canceled_duplicate": account.canceled("duplicate_payment"),
        "canceled_admin": account.canceled("admin"),
        "canceled_nothing_back": account.canceled("refund_now", refund_amount=Money(amount="0.00")),
        "renewal_failed_final": account.renewal_failed(final=True),
        "renewal_failed_unknown_next": account.renewal_failed(next_retry_at=None, access_until=None),
        "expiring_with_auto_renew": account.expiring_soon(auto_renew=True),
        "trial_ending": account.expiring_soon(auto_renew=True, trial=True, next_charge=Money(amount="1490.00")),
        "trial_without_renewal": account.trial_started(auto_renew=False),
        "payment_abandoned": account.payment_failed("expired_on_confirmation"),
        "payment_unknown_reason": account.payment_failed("brand_new_reason"),
        "upgraded_by_credit_alone": account.upgraded(amount_charged=Money(amount="0.00"), payment_id=None),
        "renewed_into_a_downgrade": account.renewed(plan_id="weekly", plan_name="Weekly", previous_plan_name=plan_name),
    }
    out = {}
    for name, event in events.items():
        for known in (facts, Facts()):  # with and without the remembered plan name
            plan = plan_email(event, known)
            assert isinstance(plan, EmailPlan), name
            out[(name, known.plan_name is not None)] = renderer.render(plan)
    return out


@pytest.mark.parametrize("locale", ["ru", "en"])
def test_every_template_renders_in_both_languages(renderer: Renderer, locale: str) -> None:
    rendered = _rendered_all(renderer, locale, "Месяц" if locale == "ru" else "Monthly")
    assert {name for name, _ in rendered} >= set(EMAIL_KINDS)
    cyrillic = "Здравствуйте" if locale == "ru" else "Hello"
    for (name, _), email in rendered.items():
        assert email.subject and "\n" not in email.subject, name
        assert email.text.startswith(cyrillic), name
        assert f'<html lang="{locale}">' in email.html, name
        assert "{{" not in email.text + email.html and "{%" not in email.text + email.html, name
        assert ".." not in email.text, (name, email.text)


def test_every_kind_has_all_parts_in_every_language() -> None:
    for locale in ("ru", "en"):
        for kind in EMAIL_KINDS:
            for part in ("subject.txt", "txt", "html"):
                assert (TEMPLATES / locale / f"{kind}.{part}").is_file(), f"{locale}/{kind}.{part}"


def test_purchase_email_russian(renderer: Renderer) -> None:
    account = Account(locale="ru", plan_name="Месяц")
    email = renderer.render(plan_email(account.activated()))  # type: ignore[arg-type]
    assert email.subject == "Оплата прошла: подписка «Месяц» активна"
    assert f"Мы получили оплату 1{NBSP}490,00{NBSP}₽." in email.text
    assert "Период: с 5 марта 2026 по 4 апреля 2026." in email.text
    assert "Автопродление включено" in email.text
    assert f"<strong>1{NBSP}490,00{NBSP}₽</strong>" in email.html


def test_purchase_email_english(renderer: Renderer) -> None:
    account = Account(locale="en", plan_name="Monthly")
    email = renderer.render(plan_email(account.activated(auto_renew=False)))  # type: ignore[arg-type]
    assert email.subject == "Payment received: your Monthly subscription is active"
    assert f"We received your payment of RUB{NBSP}1,490.00." in email.text
    assert "Period: March 5, 2026 to April 4, 2026." in email.text
    assert "Auto-renewal is off: the subscription ends on April 4, 2026." in email.text


def _promo(periods_left: int) -> AppliedPromo:
    return AppliedPromo(code="SPRING20", percent_off=20, periods=3, list_price=Money(amount="1490.00"),
                        discount=Money(amount="298.00"), periods_left=periods_left)


def test_purchase_and_renewal_emails_show_the_promo_discount(renderer: Renderer) -> None:
    ru, en = Account(locale="ru", plan_name="Месяц"), Account(locale="en", plan_name="Monthly")
    email = renderer.render(plan_email(ru.activated(amount_paid=Money(amount="1192.00"), promo=_promo(2))))  # type: ignore[arg-type]
    assert f"Мы получили оплату 1{NBSP}192,00{NBSP}₽." in email.text
    assert (f"Промокод SPRING20: скидка 298,00{NBSP}₽ от цены 1{NBSP}490,00{NBSP}₽. "
            "Скидка сохранится при продлении ещё на периодов: 2, затем — полная цена.") in email.text
    assert "<strong>SPRING20</strong>" in email.html
    email = renderer.render(plan_email(en.activated(amount_paid=Money(amount="1192.00"), promo=_promo(0))))  # type: ignore[arg-type]
    assert f"Promo code SPRING20: RUB{NBSP}298.00 off the price of RUB{NBSP}1,490.00.\n" in email.text
    email = renderer.render(plan_email(en.renewed(amount=Money(amount="1192.00"), promo=_promo(0))))  # type: ignore[arg-type]
    assert "From the next period on, the full price." in email.text and "SPRING20" in email.html
    email = renderer.render(plan_email(ru.renewed(amount=Money(amount="1192.00"), promo=_promo(1))))  # type: ignore[arg-type]
    assert "Со скидкой осталось периодов: 1." in email.text
    plain = renderer.render(plan_email(en.activated()))  # type: ignore[arg-type]
    assert "Promo code" not in plain.text + plain.html


def test_payment_failed_says_why(renderer: Renderer) -> None:
    account = Account(locale="ru")
    for reason, sentence in [
        ("insufficient_funds", "На карте недостаточно средств."),
        ("card_expired", "Срок действия карты истёк."),
        ("3d_secure_failed", "3-D Secure"),
        ("expired_on_confirmation", "страница оплаты была закрыта"),
        ("call_issuer", "Позвоните в ваш банк"),
        ("never_heard_of_it", "Платёж не прошёл."),
    ]:
        email = renderer.render(plan_email(account.payment_failed(reason), Facts(plan_name="Месяц")))  # type: ignore[arg-type]
        assert sentence in email.text and sentence in email.html, reason
        assert email.subject == "Оплата не прошла: подписка «Месяц»"


def test_refund_emails_show_amount_and_days_used(renderer: Renderer) -> None:
    account = Account(locale="en", plan_name="Monthly")
    done = renderer.render(plan_email(account.refund_succeeded(), Facts(days_in_period=30)))  # type: ignore[arg-type]
    assert done.subject == f"Your refund of RUB{NBSP}1,192.00 is done"
    assert "Days used: 6 of 30" in done.text
    failed = renderer.render(plan_email(account.refund_failed(), Facts(plan_name="Monthly", days_used=6, days_in_period=30)))  # type: ignore[arg-type]
    assert failed.subject == f"We could not refund RUB{NBSP}1,192.00"
    assert "days used: 6 of 30" in failed.text
    assert "declined the payment without giving a reason" in failed.text


def test_a_dashboard_refund_email_says_support_made_it(renderer: Renderer) -> None:
    for locale, sentence in (("en", "Our support team made this refund for you."), ("ru", "Этот возврат оформила наша служба поддержки.")):
        account = Account(locale=locale, plan_name="Monthly")
        email = renderer.render(plan_email(account.refund_succeeded(dashboard=True, days_used=None)))  # type: ignore[arg-type]
        assert sentence in email.text and sentence in email.html and "1,192.00" in email.text.replace(NBSP, " ").replace("1 192,00", "1,192.00")
        plain = renderer.render(plan_email(account.refund_succeeded()))  # type: ignore[arg-type]
        assert sentence not in plain.text


def test_renewal_failed_says_what_happens_next_and_when(renderer: Renderer) -> None:
    account = Account(locale="ru")
    retry = renderer.render(plan_email(account.renewal_failed()))  # type: ignore[arg-type]
    assert "Следующая попытка: 5 апреля 2026, 15:15 (МСК)." in retry.text
    assert "Доступ сохраняется до 9 апреля 2026, 12:15 (МСК)." in retry.text
    assert retry.subject == "Не удалось списать оплату за продление, повторим 5 апреля 2026"
    final = renderer.render(plan_email(account.renewal_failed(final=True)))  # type: ignore[arg-type]
    assert "Это была последняя попытка" in final.text and "Следующая попытка" not in final.text


def test_html_is_escaped_text_is_not(renderer: Renderer) -> None:
    account = Account(locale="en", plan_name='Tom & Jerry <script>alert(1)</script>')
    email = renderer.render(plan_email(account.activated()))  # type: ignore[arg-type]
    assert "<script>" not in email.html
    assert "Tom &amp; Jerry &lt;script&gt;" in email.html
    assert "Tom & Jerry <script>alert(1)</script>" in email.text


def test_subject_cannot_inject_headers(renderer: Renderer) -> None:
    account = Account(locale="en", plan_name="Monthly\r\nBcc: victim@example.com")
    email = renderer.render(plan_email(account.activated()))  # type: ignore[arg-type]
    assert "\r" not in email.subject and "\n" not in email.subject


def test_a_payload_the_templates_cannot_render_is_a_render_error(renderer: Renderer) -> None:
    account = Account(locale="ru")
    plan = plan_email(account.renewed(amount=Money(amount="10.00", currency="ZZZ")))
    with pytest.raises(RenderError, match="unknown currency"):
        renderer.render(plan)  # type: ignore[arg-type]


def test_the_notifier_never_skips_an_event_type_its_decisions_inspect() -> None:
    """Skipped types are dropped unparsed: none may be a type a branch of emails.py looks at.

    PaymentSucceeded is inspected only to say why it is never the trigger, so it may be skipped.
    """
    import ast
    import inspect

    from notifier.domain import emails
    from schemas import EVENT_TYPES

    inspected: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(emails))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            classes = node.args[1]
            names = classes.elts if isinstance(classes, ast.Tuple) else [classes]
            inspected |= {n.id for n in names if isinstance(n, ast.Name)}
    known = {cls.__name__ for cls in EVENT_TYPES}
    assert {"SubscriptionActivated", "RefundSucceeded", "CheckoutStarted"} <= inspected
    assert emails.EVENT_TYPES_SKIPPED <= known
    assert emails.EVENT_TYPES_SKIPPED & inspected == {"PaymentSucceeded"}


def test_upgrade_email_shows_the_charge_and_the_credit(renderer: Renderer) -> None:
    for locale, words in (("ru", ("Мы списали 13{0}907,00{0}₽", "за вычетом 993,00{0}₽")), ("en", ("We charged RUB{0}13,907.00", "credit of RUB{0}993.00"))):
        email = renderer.render(plan_email(Account(locale=locale).upgraded()))  # type: ignore[arg-type]
        for word in words:
            assert word.format(NBSP) in email.text, (locale, email.text)


def test_downgrade_emails_name_the_plan_and_the_date(renderer: Renderer) -> None:
    scheduled = renderer.render(plan_email(Account(locale="en", plan_name="Monthly").switch_scheduled()))  # type: ignore[arg-type]
    assert scheduled.subject == "Your subscription switches to Weekly on April 4, 2026"
    assert f"charge RUB{NBSP}490.00" in scheduled.text
    account = Account(locale="ru", plan_name="Месяц")
    renewed = renderer.render(plan_email(account.renewed(plan_id="weekly", plan_name="Неделя", previous_plan_name="Месяц")))  # type: ignore[arg-type]
    assert "перешла с тарифа «Месяц» на тариф «Неделя»" in renewed.text and renewed.subject.startswith("Подписка «Неделя» продлена")


@pytest.mark.parametrize("locale", ["ru", "en"])
def test_3ds_renewal_email_carries_the_link_and_a_failed_renewal_offers_pay_now(renderer: Renderer, locale: str) -> None:
    account = Account(locale=locale)
    asked = plan_email(account.confirmation_required())
    assert isinstance(asked, EmailPlan) and asked.kind == "renewal_confirmation"
    email = renderer.render(asked)
    url = "http://127.0.0.1:8010/checkout/2f9d7a1c-000f-5000-8000-000000000001"
    assert url in email.text and f'href="{url}"' in email.html and "3-D Secure" in email.text
    failed = renderer.render(plan_email(account.renewal_failed()))  # type: ignore[arg-type]
    assert ("Оплатить сейчас" if locale == "ru" else "Pay now") in failed.text
    recovered = plan_email(account.renewed(purpose="recovery"))
    assert isinstance(recovered, EmailPlan) and recovered.kind == "recovery_succeeded"
    assert ("снова действует" if locale == "ru" else "active again") in renderer.render(recovered).text
    assert isinstance(plan_email(account.payment_failed(purpose="recovery")), Skip)
