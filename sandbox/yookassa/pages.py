"""The payment page behind `confirmation_url`: a card form, then a result page.

People use it in a browser during demos; tests and benchmarks submit the very same form over HTTP.
The result page carries `data-status` / `data-reason` attributes so a script can read the outcome.
"""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

from . import cards

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}YooKassa sandbox{% endblock %}</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f4f8;margin:0;padding:2rem;color:#222}
.card{max-width:30rem;margin:auto;background:#fff;border-radius:12px;padding:1.5rem 2rem;box-shadow:0 2px 12px #0002}
h1{font-size:1.3rem}.amount{font-size:2rem;font-weight:600;margin:.5rem 0}
label{display:block;margin:.8rem 0 .2rem;font-size:.9rem;color:#555}
input{font-size:1.1rem;padding:.4rem;width:100%;box-sizing:border-box}
.row{display:flex;gap:.5rem}.row>div{flex:1}
button{font-size:1rem;padding:.6rem 1.2rem;margin-top:1rem;border-radius:8px;border:0;cursor:pointer}
.pay{background:#1a73e8;color:#fff}.leave{background:#ddd}
.error{color:#b00020;font-weight:600}.muted{color:#777;font-size:.85rem}
table{border-collapse:collapse;font-size:.8rem;margin-top:1rem}td{padding:2px 6px;border-bottom:1px solid #eee}
.ok{color:#137333}.bad{color:#b00020}
</style></head><body><main class="card" data-payment-id="{{ payment.id if payment else '' }}"
 data-status="{{ payment.status if payment else 'not_found' }}"
 data-reason="{{ payment.cancellation_details.reason if payment and payment.cancellation_details else '' }}">
{% block body %}{% endblock %}
</main></body></html>"""

CHECKOUT = """{% extends "base" %}{% block title %}Pay {{ payment.amount.value }} {{ payment.amount.currency }}{% endblock %}
{% block body %}
<h1>YooKassa sandbox — payment</h1>
{% if payment.description %}<p>{{ payment.description }}</p>{% endif %}
<div class="amount">{{ payment.amount.value }} {{ payment.amount.currency }}</div>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<label for="card_number">Card number</label>
<input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number"
 value="{{ card_number }}" placeholder="5555 5555 5555 4444">
<div class="row"><div><label for="expiry_month">Month</label><input id="expiry_month" name="expiry_month" placeholder="12"></div>
<div><label for="expiry_year">Year</label><input id="expiry_year" name="expiry_year" placeholder="30"></div>
<div><label for="csc">CVC</label><input id="csc" name="csc" placeholder="123"></div></div>
<button class="pay" type="submit" name="action" value="pay">Pay {{ payment.amount.value }} {{ payment.amount.currency }}</button>
<button class="leave" type="submit" name="action" value="leave">Back to the shop</button>
</form>
<p class="muted">Test cards (any expiry in the future, any CVC):</p>
<table>{% for number, label, cls in test_cards %}<tr><td><code>{{ number }}</code></td><td class="{{ cls }}">{{ label }}</td></tr>{% endfor %}</table>
{% endblock %}"""

RESULT = """{% extends "base" %}{% block title %}Payment {{ payment.status }}{% endblock %}
{% block body %}
<h1>{{ headline }}</h1>
<div class="amount">{{ payment.amount.value }} {{ payment.amount.currency }}</div>
<p id="status">Status: <b>{{ payment.status }}</b>{% if payment.cancellation_details %}
 — reason: <b id="reason">{{ payment.cancellation_details.reason }}</b>{% endif %}</p>
{% if note %}<p class="muted">{{ note }}</p>{% endif %}
{% if return_url %}<p><a id="return" href="{{ return_url }}">Return to the shop</a></p>{% endif %}
{% endblock %}"""

NOT_FOUND = """{% extends "base" %}{% block body %}<h1>Payment not found</h1>
<p>No payment with this id exists in the sandbox.</p>{% endblock %}"""

_env = Environment(
    loader=DictLoader({"base": BASE, "checkout": CHECKOUT, "result": RESULT, "not_found": NOT_FOUND}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)

HEADLINES = {
    "succeeded": "Payment succeeded",
    "waiting_for_capture": "Payment authorised — waiting for the shop to capture it",
    "canceled": "Payment declined",
    "pending": "You left the payment page",
}


def _test_cards() -> list[tuple[str, str, str]]:
    rows = [(number, "succeeds", "ok") for number in cards.SUCCESS_CARDS]
    rows += [(number, f"declines: {d.reason}", "bad") for number, d in cards.DECLINES.items()]
    return rows


def checkout_page(payment: dict[str, Any], action: str, error: str | None = None, card_number: str = "") -> str:
    return _env.get_template("checkout").render(
        payment=payment, action=action, error=error, card_number=card_number, test_cards=_test_cards()
    )


def result_page(payment: dict[str, Any], return_url: str | None, note: str | None = None) -> str:
    status = payment["status"]
    headline = HEADLINES.get(status, status)
    if status == "canceled" and (payment.get("cancellation_details") or {}).get("reason") == "expired_on_confirmation":
        headline = "Payment expired: it was not confirmed in time"
    return _env.get_template("result").render(payment=payment, return_url=return_url, headline=headline, note=note)


def not_found_page() -> str:
    return _env.get_template("not_found").render(payment=None)
