"""The processor's I/O: YooKassa (`gateway`), the handler's unit of work on asyncpg (`journal`),
and its own tables `processor.open_operations` (`operations`) and `processor.schedule` (`schedule`)."""
