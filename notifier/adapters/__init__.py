"""The notifier's ports to the outside: PostgreSQL (the email record), Mailgun, the dead-letter topic, the templates on disk."""
