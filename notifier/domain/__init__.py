"""Pure notifier logic: which event becomes which email, and how money and dates read. No I/O."""
