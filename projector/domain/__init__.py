"""Pure projector logic: the event view, the in-memory row state and the projections. No I/O."""
