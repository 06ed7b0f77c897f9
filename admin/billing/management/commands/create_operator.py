"""`python -m admin manage create_operator NAME [--viewer] [--password-env VAR]`.

Creates (or updates) a staff user in billing-operators (or billing-viewers with --viewer). The
password comes from the named environment variable, or is asked for interactively; it is never
taken from the command line, where it would end up in shell history and process lists.

The name must pass the operator-name rule the command API applies to `X-Operator`
(schemas/operators.py: letters in any script, digits, @ . + - _), so every operator created here
can act; it is refused before a password is asked for.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schemas.operators import operator_name_error

OPERATORS = "billing-operators"
VIEWERS = "billing-viewers"


class Command(BaseCommand):
    help = "Create or update an operator of the billing admin (staff user in billing-operators or billing-viewers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--viewer", action="store_true", help="read-only: billing-viewers instead of operators")
        parser.add_argument("--password-env", metavar="VAR",
                            help="read the password from this environment variable instead of a prompt")
        parser.add_argument("--skip-validation", action="store_true",
                            help="accept a password Django's validators reject (demo set-ups only)")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        # NFKC like Django's own create_user, so the stored name is the one the rule was checked on
        username: str = User.normalize_username(options["username"])
        problem = operator_name_error(username)
        if problem is not None:
            raise CommandError(f"{username!r}: {problem}")
        try:
            User._meta.get_field(User.USERNAME_FIELD).run_validators(username)
        except ValidationError as exc:
            raise CommandError(f"{username!r}: " + "; ".join(exc.messages)) from exc
        if options["password_env"]:
            password = os.environ.get(options["password_env"], "")
            if not password:
                raise CommandError(f"environment variable {options['password_env']} is empty or unset")
        else:
            password = getpass.getpass(f"Password for {username}: ")
            if password != getpass.getpass("Again: "):
                raise CommandError("the passwords differ")
        user = User.objects.filter(username=username).first() or User(username=username)
        if not options["skip_validation"]:
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError("; ".join(exc.messages)) from exc
        user.email = options["email"] or user.email
        user.is_staff = True
        user.is_active = True
        user.set_password(password)
        user.save()
        try:
            group = Group.objects.get(name=VIEWERS if options["viewer"] else OPERATORS)
        except Group.DoesNotExist as exc:
            raise CommandError("the billing groups do not exist yet: run `python -m admin manage migrate`") from exc
        user.groups.remove(*Group.objects.filter(name__in=[OPERATORS, VIEWERS]))
        user.groups.add(group)
        self.stdout.write(f"{username}: staff user in {group.name}")
