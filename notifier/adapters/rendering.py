"""Jinja2 rendering of an email's three parts: subject, plain text and HTML.

Templates live in `notifier/templates/<locale>/<kind>.{subject.txt,txt,html}`. HTML is
autoescaped (a plan name is data, not markup); undefined variables raise, so a payload the
templates cannot show becomes a RenderError — the event is dead-lettered instead of emailing
half a sentence. Money and dates go through the Babel filters `money`, `day` and `moment`,
which read the language and display zone from the render context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, pass_context, select_autoescape
from jinja2.runtime import Context

from notifier.domain.emails import EMAIL_KINDS, EmailPlan
from notifier.domain.formatting import SUPPORTED_LOCALES, FormattingError, format_day, format_moment, format_money

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PARTS = ("subject.txt", "txt", "html")


class RenderError(ValueError):
    """The templates cannot render this event's email (a poison event)."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@pass_context
def _money(ctx: Context, value: Any) -> str:
    return format_money(value, ctx["locale"])


@pass_context
def _day(ctx: Context, value: Any) -> str:
    return format_day(value, ctx["locale"], ctx["zone"])


@pass_context
def _moment(ctx: Context, value: Any) -> str:
    return format_moment(value, ctx["locale"], ctx["zone"])


class Renderer:
    """Renders email plans; one instance per process (templates are compiled once and cached)."""

    def __init__(self, *, zone: str = "Europe/Moscow", templates_dir: Path = TEMPLATES) -> None:
        self.zone = zone
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(money=_money, day=_day, moment=_moment)

    def render(self, plan: EmailPlan) -> RenderedEmail:
        return self.render_kind(plan.kind, plan.locale, plan.context)

    def render_kind(self, kind: str, locale: str, context: dict[str, Any]) -> RenderedEmail:
        if kind not in EMAIL_KINDS:
            raise RenderError(f"no templates for email kind {kind!r}")
        if locale not in SUPPORTED_LOCALES:
            raise RenderError(f"no templates for locale {locale!r}")
        values = {**context, "locale": locale, "zone": self.zone, "kind": kind}
        try:
            subject, text, html = (self.env.get_template(f"{locale}/{kind}.{part}").render(values) for part in PARTS)
        except (TemplateError, FormattingError, AttributeError, TypeError, ValueError, LookupError) as exc:
            raise RenderError(f"{locale}/{kind}: {type(exc).__name__}: {exc}") from exc
        subject = _one_line(subject)
        if not subject or not text.strip() or not html.strip():
            raise RenderError(f"{locale}/{kind}: a part rendered empty")
        return RenderedEmail(subject=subject, text=_tidy_text(text), html=html.strip() + "\n")


def _one_line(value: str) -> str:
    """Subjects are one header line: no CR/LF can reach the mail headers."""
    # not \s: that would also eat the NO-BREAK SPACEs that hold an amount together
    return re.sub(r"[ \t\r\n\v\f\x85\u2028\u2029]+", " ", value).strip(" ")


def _tidy_text(value: str) -> str:
    """Collapse the blank lines template conditionals leave behind."""
    return re.sub(r"\n{3,}", "\n\n", value).strip() + "\n"
