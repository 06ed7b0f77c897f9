"""The payment processor refuses to start with missing or wrong receipt settings (decision 0123):
the real `python -m payment_processor`, which must stop before touching Kafka or PostgreSQL, with
one message that names each setting."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

PRODUCTION = {
    "ENVIRONMENT": "production", "BILLING_CLOCK": "system", "DATABASE_URL": "postgresql://billing:pw@db.internal:5432/billing",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.internal:9092", "YOOKASSA_SHOP_ID": "504231", "YOOKASSA_SECRET_KEY": "live_" + "k" * 40,
    "YOOKASSA_API_URL": "https://api.yookassa.ru/v3", "YOOKASSA_RETURN_URL": "https://cinema.example.com/billing/return",
}


def start(**env: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run([sys.executable, "-m", "payment_processor"], cwd=ROOT, env={**keep, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=60)


def test_production_refuses_to_start_without_the_shops_tax_system_and_default_vat_code() -> None:
    refused = start(**PRODUCTION)
    assert refused.returncode != 0
    assert "ENVIRONMENT=production refuses the ProcessorServiceSettings configuration (2 problems)" in refused.stderr
    assert "YOOKASSA_TAX_SYSTEM_CODE is not set" in refused.stderr and "YOOKASSA_RECEIPT_VAT_CODE is not set" in refused.stderr


def test_a_wrong_receipt_setting_is_refused_in_any_environment() -> None:
    """(Every wrong value of every setting is covered by tests/unit/test_production_settings.py.)"""
    cases = (
        ({**PRODUCTION, "YOOKASSA_TAX_SYSTEM_CODE": "7", "YOOKASSA_RECEIPT_VAT_CODE": "1"}, "yookassa_tax_system_code"),
        ({"ENVIRONMENT": "development", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "YOOKASSA_RECEIPT_VAT_CODE": "13"},
         "yookassa_receipt_vat_code"),
    )
    for env, name in cases:
        refused = start(**env)
        assert refused.returncode != 0, name
        assert name in refused.stderr and "validation error for ProcessorServiceSettings" in refused.stderr, refused.stderr[-2000:]
