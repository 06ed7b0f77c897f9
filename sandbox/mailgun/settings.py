"""Configuration of the Mailgun sandbox; the key and domain use the services' variable names."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MailgunSandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_MAILGUN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8020
    api_key: str = Field("key-sandbox", validation_alias=AliasChoices("MAILGUN_API_KEY", "api_key"))
    domain: str = Field("mg.billing.local", validation_alias=AliasChoices("MAILGUN_DOMAIN", "domain"))
    extra_domains: str = Field("", description="more sending domains, comma-separated")
    db: Path = Path(".stack/sandbox/mailgun.sqlite3")
    faults: str = ""
    allow_reset: bool = False
    access_log: bool = False

    @property
    def domains(self) -> set[str]:
        extra = {d.strip().lower() for d in self.extra_domains.split(",") if d.strip()}
        return {self.domain.lower(), *extra}
