"""What runs in the processor, each a loop `bootstrap` builds: the consumer of billing.commands
(`consumer`), and the tickers (`ticker`) that publish commands — the janitor (`janitor`) and the
renewal scheduler (`scheduler`)."""
