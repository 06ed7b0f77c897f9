"""Admin pages over the read models and the event store: everything read-only.

Nobody adds, changes or deletes a read-model row here (the projector alone writes them); the
buttons on a subscription, account or plan lead to the operator actions in views.py, which
issue commands. Money is shown as money, dates in the admin's time zone, and every page links
subscription ↔ payments ↔ refunds ↔ account ↔ timeline.
"""

from __future__ import annotations

from django.contrib import admin

admin.site.site_header = "Billing administration"
admin.site.site_title = "Billing admin"
admin.site.index_title = "Subscriptions, payments and commands"
admin.site.site_url = None  # there is no public site: / redirects to the admin

# Importing the page modules registers their model admins with the site.
from admin.billing.admin import accounts, commands, payments, plans, promo_codes, reconciliation, revenue, subscriptions  # noqa: E402,F401
