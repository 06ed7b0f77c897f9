"""Business rules more than one part needs, pure (no I/O): the prorated refund arithmetic."""
