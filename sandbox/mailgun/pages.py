"""The inbox pages: what a developer looks at to see the emails the product sent."""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

BASE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{% block title %}Mailgun sandbox{% endblock %}</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}table{border-collapse:collapse;width:100%}
td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:.9rem;vertical-align:top}
.tag{background:#eef;border-radius:4px;padding:0 4px;margin-right:2px;font-size:.8rem}
iframe{width:100%;height:32rem;border:1px solid #ccc}pre{white-space:pre-wrap;background:#f6f6f6;padding:.8rem}
.muted{color:#777}</style></head><body>{% block body %}{% endblock %}</body></html>"""

INBOX = """{% extends "base" %}{% block body %}
<h1>Mailgun sandbox — inbox{% if to %} for {{ to }}{% endif %}</h1>
<form><input name="to" placeholder="filter by recipient" value="{{ to or '' }}"> <button>Filter</button>
{% if to %}<a href="/inbox">all</a>{% endif %}</form>
<p class="muted">{{ items|length }} latest message(s). JSON: <code>/sandbox/messages?to=ADDRESS</code></p>
<table><tr><th>#</th><th>received</th><th>to</th><th>subject</th><th>tags</th><th>Message-Id</th></tr>
{% for m in items %}<tr><td>{{ m.storage_id }}</td><td>{{ m.received_at }}</td><td>{{ m.to|join(", ") }}</td>
<td><a href="/inbox/{{ m.storage_id }}">{{ m.subject }}</a></td>
<td>{% for t in m.tags %}<span class="tag">{{ t }}</span>{% endfor %}</td><td><code>{{ m.id }}</code></td></tr>
{% else %}<tr><td colspan="6">No messages yet.</td></tr>{% endfor %}</table>{% endblock %}"""

MESSAGE = """{% extends "base" %}{% block title %}{{ m.subject }}{% endblock %}{% block body %}
<p><a href="/inbox">← inbox</a></p><h1>{{ m.subject }}</h1>
<table><tr><th>From</th><td>{{ m.from }}</td></tr><tr><th>To</th><td>{{ m.to|join(", ") }}</td></tr>
<tr><th>Message-Id</th><td><code>{{ m.id }}</code></td></tr><tr><th>Received</th><td>{{ m.received_at }}</td></tr>
<tr><th>Tags</th><td>{% for t in m.tags %}<span class="tag">{{ t }}</span>{% endfor %}</td></tr>
<tr><th>Variables</th><td><code>{{ m.variables|tojson }}</code></td></tr>
<tr><th>Headers</th><td><code>{{ m.headers|tojson }}</code></td></tr></table>
{% if m.html %}<h2>HTML</h2><iframe sandbox srcdoc="{{ m.html }}"></iframe>{% endif %}
{% if m.text %}<h2>Text</h2><pre>{{ m.text }}</pre>{% endif %}{% endblock %}"""

_env = Environment(
    loader=DictLoader({"base": BASE, "inbox": INBOX, "message": MESSAGE}),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def inbox_page(items: list[dict[str, Any]], to: str | None) -> str:
    return _env.get_template("inbox").render(items=items, to=to)


def message_page(message: dict[str, Any]) -> str:
    return _env.get_template("message").render(m=message)
