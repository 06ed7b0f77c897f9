"""The projector's database work: loading and writing read-model rows, applying batches, rebuilding from the event store."""
