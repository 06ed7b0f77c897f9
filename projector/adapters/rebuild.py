"""Rebuilding read models from the event store: full rebuild + atomic swap, check, point in time.

The bulk phase reads `eventstore.events` stream after stream (the (stream_id, stream_version)
index), in pages, applies the SAME projection functions the live projector uses to plain dict
state in memory, and COPYs each finished batch of streams into a fresh schema whose tables are
created LIKE the live ones (indexes are built after the load, with the live names). Projections
are stream-local, so log order across streams does not matter, memory stays bounded (a page of
events plus ~50,000 rows) and ranges of stream ids can be projected by parallel workers.

Swap and check then bring the rebuild and the live read models to EXACTLY the same per-stream
versions while the live projector is paused (exclusive advisory lock; every projector batch takes
it shared), and either move the rebuilt tables into `read` in the same transaction or compare them
column by column. See docs/decisions/0050-replay-swap.md for why nothing is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson

from infra.logging import get_logger
from infra.settings import Settings, plain_url
from projector.adapters import storage
from projector.adapters.engine import PROJECTOR_LOCK_KEY, Target, apply_events
from projector.adapters.storage import quote_ident
from projector.domain.events import ROW_COLUMNS, ProjectedEvent, from_row
from projector.domain.projections import TABLE_NAMES, TABLES, apply_event, new_state
from projector.domain.state import State

log = get_logger(__name__)

Mode = Literal["swap", "check", "until"]
ProgressFn = Callable[[int, int], None]
"""`progress(events_done, events_total_estimate)`."""

POSITIONS_TABLE = "_stream_positions"
FLUSH_ROWS = 50_000
"""Rows a replay worker holds before it COPYs finished streams out (memory stays ~50 MB)."""


class ReplayError(RuntimeError):
    """A replay that cannot run as asked (bad schema name, target exists, ...)."""


PRODUCT_SCHEMAS = frozenset({"public", "eventstore", "read", "projector", "processor", "notifier", "api", "django"})
"""Every schema the product's migrations (and the admin's `django`) create: never a replay target."""
REPLAY_SCRATCH_PREFIXES = ("read_rebuild_", "read_check_", "read_old_")
"""Schemas a replay makes for itself (kept with --keep): another run must not reuse or drop them."""


def refuse_unsafe_target(schema: str) -> None:
    """Raise ReplayError when `--into schema` could touch anything but a new copy of its own.

    Checked before the replay connects, so a typo can never reach a DROP. Compared without case:
    `Processor` is a different schema to PostgreSQL but almost certainly the same mistake.
    """
    try:
        quote_ident(schema)
    except ValueError:
        raise ReplayError(f"--into {schema!r} is not a schema name: use letters, digits and _ only") from None
    lowered = schema.lower()
    if lowered.startswith("pg_") or lowered == "information_schema":
        raise ReplayError(f"--into {schema!r} is a PostgreSQL system schema; choose a new name such as audit_2026_11")
    if lowered in PRODUCT_SCHEMAS or lowered.startswith(REPLAY_SCRATCH_PREFIXES):
        raise ReplayError(
            f"--into {schema!r} is one of the product's own schemas ({', '.join(sorted(PRODUCT_SCHEMAS))}, "
            f"{', '.join(p + '*' for p in REPLAY_SCRATCH_PREFIXES)}); a --until copy goes into a new schema "
            "of its own, e.g. audit_2026_11"
        )


@dataclass
class Difference:
    table: str
    key: str
    column: str
    live: Any
    rebuilt: Any

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "key": self.key, "column": self.column, "live": self.live, "rebuilt": self.rebuilt}


@dataclass
class ReplayReport:
    run_id: int
    mode: Mode
    schema: str
    tables: list[str]
    head_position: int
    events: int = 0
    workers: int = 1
    duplicates: int = 0
    gap_filled: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    caught_up_events: int = 0
    reconciled_streams: int = 0
    differences: list[Difference] = field(default_factory=list)
    server_cpu_s: float | None = None
    server_cpu_indexes_s: float | None = None
    python_cpu_s: float = 0.0
    partition_timings: dict[str, float] = field(default_factory=dict)

    @property
    def bulk_seconds(self) -> float:
        return sum(self.timings.get(k, 0.0) for k in ("read_apply_write", "indexes"))

    @property
    def events_per_s(self) -> float:
        return self.events / self.bulk_seconds if self.bulk_seconds else 0.0


@dataclass
class ReplayOptions:
    mode: Mode = "swap"
    tables: Sequence[str] = ()
    until_position: int | None = None
    until_time: datetime | None = None
    into: str | None = None
    page_size: int = 20_000
    workers: int | None = None
    keep: bool = False


def parse_until(value: str) -> tuple[int | None, datetime | None]:
    """`--until`: a global position (digits) or an ISO timestamp with a timezone."""
    text = value.strip()
    if text.isdigit():
        return int(text), None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReplayError(f"--until {value!r} is neither a position nor an ISO timestamp") from exc
    if moment.tzinfo is None:
        raise ReplayError(f"--until {value!r} needs a timezone, e.g. {text}Z or {text}+03:00")
    return None, moment


async def connect(settings: Settings, name: str = "replay") -> asyncpg.Connection:
    return await asyncpg.connect(
        plain_url(settings.database_url),
        timeout=10,
        command_timeout=3600,
        server_settings={**storage.SERVER_SETTINGS, "application_name": f"billing-{name}"},
    )


async def read_streams(
    conn: asyncpg.Connection, ranges: dict[str, tuple[int, int | None]]
) -> list[ProjectedEvent]:
    """Events of several streams, `{stream: (after_version, up_to_version or None)}`, in log order."""
    if not ranges:
        return []
    streams = list(ranges)
    rows = await conn.fetch(
        f"SELECT {ROW_COLUMNS} "
        "FROM unnest($1::text[], $2::int[], $3::int[]) AS q(s, a, b) "
        "JOIN eventstore.events e ON e.stream_id = q.s AND e.stream_version > q.a "
        "AND (q.b IS NULL OR e.stream_version <= q.b) ORDER BY e.position",
        streams,
        [ranges[s][0] for s in streams],
        [ranges[s][1] for s in streams],
    )
    return [from_row(r) for r in rows]


def _chunks(ranges: dict[str, tuple[int, int]], size: int = 2000) -> list[dict[str, tuple[int, int | None]]]:
    items = sorted(ranges.items())
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]


Job = Callable[[asyncpg.Connection], Awaitable[None]]


async def _run_parallel(conns: Sequence[asyncpg.Connection], jobs: Sequence[Job]) -> None:
    """Run jobs over several connections (PostgreSQL does COPY and CREATE INDEX on other cores)."""
    queue = list(jobs)

    async def worker(conn: asyncpg.Connection) -> None:
        while queue:
            job = queue.pop(0)
            await job(conn)

    await asyncio.gather(*(worker(c) for c in conns))


def _copy_job(schema: str, table: str, rows: list[Any]) -> Job:
    async def job(conn: asyncpg.Connection) -> None:
        await storage.copy_rows(conn, schema, table, rows)

    return job


def _copy_positions_job(schema: str, versions: dict[str, tuple[int, int | None]]) -> Job:
    async def job(conn: asyncpg.Connection) -> None:
        await storage.copy_positions(conn, schema, POSITIONS_TABLE, versions)

    return job


def _statements_job(statements: list[str]) -> Job:
    async def job(conn: asyncpg.Connection) -> None:
        # tables of a few hundred thousand rows: parallel index builds cost more than they save
        await conn.execute("SET max_parallel_maintenance_workers = 0")
        for statement in statements:
            await conn.execute(statement)

    return job


async def _prefetched_pages(
    conn: asyncpg.Connection, query: str, start: tuple[Any, ...], args: Sequence[Any], next_key: Callable[[Any], tuple[Any, ...]]
) -> AsyncIterator[list[Any]]:
    """Keyset pages of `query` (its first parameters are the last key), the next page already
    requested while the caller works on this one."""
    pending = asyncio.ensure_future(conn.fetch(query, *start, *args))
    try:
        while True:
            rows = await pending
            if not rows:
                return
            pending = asyncio.ensure_future(conn.fetch(query, *next_key(rows[-1]), *args))
            yield rows
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await pending


def _backend_cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU the PostgreSQL backends of this replay used (local server only; None otherwise)."""
    total = 0.0
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def stream_reader(conn: asyncpg.Connection) -> Callable[[str, int], Any]:
    async def read_stream(stream_id: str, after_version: int) -> list[ProjectedEvent]:
        return await read_streams(conn, {stream_id: (after_version, None)})

    return read_stream


@dataclass(frozen=True)
class PartitionJob:
    """One worker's share of a bulk replay: the streams with `low <= stream_id < high` (None: open)."""

    database_url: str
    schema: str
    head: int
    until_time: datetime | None
    page_size: int
    low: str | None = None
    high: str | None = None
    flush_rows: int = FLUSH_ROWS


@dataclass
class PartitionResult:
    events: int = 0
    duplicates: int = 0
    gap_filled: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    python_cpu_s: float = 0.0
    server_cpu_s: float | None = None


async def replay_partition(job: PartitionJob, progress: Callable[[int], None]) -> PartitionResult:
    """Project a range of streams, stream after stream, COPYing finished streams' rows as it goes.

    The log is read in (stream_id, stream_version) order through the events' unique index: the
    projections are stream-local (docs/decisions/0051), so a stream's rows are final once the reader
    has moved past it. Memory holds at most `flush_rows` rows and one page of events, whatever the
    size of the log, and small dicts stay in the CPU caches (30% faster than log order). Bounding by
    position or recorded_at keeps a prefix of every stream: both grow with the version.
    """
    settings = Settings(database_url=job.database_url)
    result = PartitionResult()
    cpu_started = time.process_time()
    conns = [await connect(settings, "replay"), await connect(settings, "replay-reader"), await connect(settings, "replay-writer")]
    main, reader, writer = conns
    # The bulk phase allocates millions of small dicts: the cyclic garbage collector would rescan the
    # live ones on every allocation burst (it doubled the cost per event). Rows, events and pages hold
    # no reference cycles, so reference counting frees them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    queue: asyncio.Queue[tuple[State, dict[str, tuple[int, int | None]]] | None] = asyncio.Queue(maxsize=2)
    write_seconds = 0.0

    async def write_flushes() -> None:
        nonlocal write_seconds
        while (item := await queue.get()) is not None:
            started = time.perf_counter()
            state, versions = item
            for table in TABLE_NAMES:
                result.rows[table] = result.rows.get(table, 0) + len(state.rows[table])
            jobs = [_copy_job(job.schema, t, list(state.rows[t].values())) for t in TABLE_NAMES if state.rows[t]]
            jobs.append(_copy_positions_job(job.schema, versions))
            await _run_parallel([writer, main], jobs)
            write_seconds += time.perf_counter() - started

    writing = asyncio.create_task(write_flushes())
    try:
        started = time.perf_counter()
        state = new_state()
        versions: dict[str, tuple[int, int | None]] = {}
        rows_in_state = 0
        conditions = ["(stream_id, stream_version) > ($1, $2)", "position <= $3"]
        args: list[Any] = [job.head]
        if job.until_time is not None:
            args.append(job.until_time)
            conditions.append(f"recorded_at <= ${len(args) + 2}")
        if job.high is not None:
            args.append(job.high)
            conditions.append(f"stream_id < ${len(args) + 2}")
        query = (
            f"SELECT {ROW_COLUMNS} FROM eventstore.events WHERE {' AND '.join(conditions)} "
            f"ORDER BY stream_id, stream_version LIMIT {int(job.page_size)}"
        )
        read_stream = stream_reader(main)
        current: str | None = None
        cur = 0
        last_position: int | None = None
        start = (job.low or "", 0)
        async for rows in _prefetched_pages(reader, query, start, args, lambda row: (row[1], row[2])):
            for row in rows:
                ev = from_row(row)
                if ev.stream_id != current:
                    if current is not None:
                        versions[current] = (cur, last_position)
                        if len(versions) % 64 == 0:  # cheap check, then count the rows for real
                            rows_in_state = state.row_count()
                            if rows_in_state >= job.flush_rows:
                                await queue.put((state, versions))
                                state, versions = new_state(), {}
                    current, cur = ev.stream_id, 0
                if ev.version != cur + 1:
                    if ev.version <= cur:
                        result.duplicates += 1
                        continue
                    missing = [e for e in await read_stream(ev.stream_id, cur) if e.version < ev.version]
                    for gap_event in missing:
                        apply_event(state, gap_event)
                    result.gap_filled += len(missing)
                apply_event(state, ev)
                cur, last_position = ev.version, ev.position
            result.events += len(rows)
            progress(result.events)
        if current is not None:
            versions[current] = (cur, last_position)
        await queue.put((state, versions))
        await queue.put(None)
        await writing
        result.timings["read_apply_write"] = time.perf_counter() - started
        result.timings["write (overlapped)"] = write_seconds
        result.server_cpu_s = _backend_cpu_seconds([c.get_server_pid() for c in conns])
    finally:
        if not writing.done():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing
        if gc_was_enabled:
            gc.enable()
        for conn in conns:
            await conn.close()
    result.python_cpu_s = time.process_time() - cpu_started
    return result


_worker_progress: Any = None


def _init_worker(progress: Any) -> None:
    global _worker_progress
    _worker_progress = progress


def _run_partition_in_worker(job: PartitionJob, slot: int) -> PartitionResult:
    def report(events: int) -> None:
        _worker_progress[slot] = events

    return asyncio.run(replay_partition(job, report))


async def _stream_ranges(conn: asyncpg.Connection, parts: int, head: int) -> list[tuple[str | None, str | None]]:
    """Split the stream-id key space into `parts` ranges of about equal event counts (a sample)."""
    percent = min(100.0, max(0.01, 20_000 * 100.0 / max(head, 1)))
    sample = sorted(r[0] for r in await conn.fetch(
        f"SELECT stream_id FROM eventstore.events TABLESAMPLE SYSTEM ({percent:.4f})"))
    cuts = sorted({sample[len(sample) * i // parts] for i in range(1, parts)}) if sample else []
    edges: list[str | None] = [None, *cuts, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


async def _in_processes(jobs: Sequence[PartitionJob], progress: Callable[[int], None]) -> list[PartitionResult]:
    """Run partitions in worker processes (Python is the bottleneck of a replay; PostgreSQL has cores too)."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process holding an event loop and sockets
    counters = ctx.Array("q", len(jobs), lock=False)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=ctx, initializer=_init_worker,
                                                initargs=(counters,)) as pool:
        futures = [loop.run_in_executor(pool, _run_partition_in_worker, job, slot) for slot, job in enumerate(jobs)]
        pending = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            progress(sum(counters))
        return [f.result() for f in futures]


class Replay:
    """One replay run; `await Replay(settings, options).run(progress)`."""

    def __init__(self, settings: Settings, options: ReplayOptions) -> None:
        self.settings = settings
        self.options = options
        unknown = sorted(set(options.tables) - set(TABLE_NAMES))
        if unknown:
            raise ReplayError(f"unknown read model(s): {', '.join(unknown)}; choose from {', '.join(TABLE_NAMES)}")
        self.tables = [t for t in TABLE_NAMES if t in options.tables] if options.tables else list(TABLE_NAMES)
        if options.mode == "until":
            if not options.into:
                raise ReplayError("--until needs --into SCHEMA (the point-in-time copy's schema)")
            refuse_unsafe_target(options.into)
            if options.until_position is None and options.until_time is None:
                raise ReplayError("--until needs a position or a timestamp")

    async def run(self, progress: ProgressFn | None = None) -> ReplayReport:
        conn = await connect(self.settings)
        try:
            return await self._run(conn, progress or (lambda done, total: None))
        finally:
            await conn.close()

    # ------------------------------------------------------------------ phases

    async def _run(self, conn: asyncpg.Connection, progress: ProgressFn) -> ReplayReport:
        opts = self.options
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM eventstore.events")
        if opts.until_position is not None:
            head = min(head, opts.until_position)
        run_id = await conn.fetchval(
            "INSERT INTO projector.replay_runs (mode, tables, target_schema, head_position) "
            "VALUES ($1, $2, '', $3) RETURNING run_id",
            opts.mode, self.tables, head,
        )
        schema = opts.into if opts.mode == "until" else f"read_{'check' if opts.mode == 'check' else 'rebuild'}_{run_id}"
        await conn.execute("UPDATE projector.replay_runs SET target_schema = $2 WHERE run_id = $1", run_id, schema)
        report = ReplayReport(run_id=run_id, mode=opts.mode, schema=schema, tables=self.tables, head_position=head)
        log.info("replay_started", run_id=run_id, mode=opts.mode, schema=schema, head=head, tables=self.tables)
        succeeded = created = False
        try:
            await self._create_schema(conn, schema)
            created = True  # from here on the schema is this run's own, and only then may it be dropped
            await self._bulk(conn, schema, head, report, progress)
            if opts.mode in ("swap", "check"):
                await self._sync_and_finish(conn, schema, head, report)
            succeeded = True
        finally:
            status = "succeeded" if succeeded else "failed"
            await conn.execute(
                "UPDATE projector.replay_runs SET status = $2, events = $3, differences = $4, finished_at = clock_timestamp() "
                "WHERE run_id = $1",
                run_id, status, report.events, len(report.differences),
            )
            if created and ((opts.mode != "until" and not opts.keep) or (opts.mode == "until" and not succeeded)):
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        return report

    async def _create_schema(self, conn: asyncpg.Connection, schema: str) -> None:
        """Create `schema` and its empty tables in one transaction: afterwards it is all ours, or nothing is."""
        q = quote_ident(schema)
        async with conn.transaction():
            try:
                # no separate existence check: CREATE SCHEMA itself refuses, even against a concurrent creator
                await conn.execute(f"CREATE SCHEMA {q}")
            except asyncpg.DuplicateSchemaError:
                raise ReplayError(
                    f"schema {schema!r} already exists; nothing was changed. Choose a new name "
                    "(or drop that schema yourself if you really mean to replace it)"
                ) from None
            for table in TABLE_NAMES:
                # everything but the indexes: they are built after the load, with the live names
                await conn.execute(f"CREATE TABLE {q}.{table} (LIKE read.{table} INCLUDING ALL EXCLUDING INDEXES)")
            # the same shape as the live positions table (its primary key comes after the load)
            await conn.execute(
                f"CREATE TABLE {q}.{POSITIONS_TABLE} (LIKE {storage.LIVE_POSITIONS} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                "EXCLUDING INDEXES)"
            )

    async def _bulk(
        self, conn: asyncpg.Connection, schema: str, head: int, report: ReplayReport, progress: ProgressFn
    ) -> None:
        """Project the log into `schema`, split into `workers` ranges of stream ids."""
        opts = self.options
        # Worker processes pay off only when PostgreSQL still has a core of its own: by default one
        # per two CPUs (so 1 on the 2-core reference machine), never for small logs.
        workers = opts.workers or (1 if head < 200_000 else max(1, min(4, (os.cpu_count() or 1) // 2)))
        bounds = await _stream_ranges(conn, workers, head) if workers > 1 else [(None, None)]
        report.workers = len(bounds)
        jobs = [
            PartitionJob(self.settings.database_url, schema, head, opts.until_time, opts.page_size, low, high)
            for low, high in bounds
        ]
        started = time.perf_counter()
        if len(jobs) == 1:
            results = [await replay_partition(jobs[0], lambda n: progress(n, max(head, n)))]
        else:
            results = await _in_processes(jobs, lambda n: progress(n, max(head, n)))
        report.timings["read_apply_write"] = time.perf_counter() - started
        for result in results:
            report.events += result.events
            report.duplicates += result.duplicates
            report.gap_filled += result.gap_filled
            for table, count in result.rows.items():
                report.rows[table] = report.rows.get(table, 0) + count
            for phase, seconds in result.timings.items():
                report.partition_timings[phase] = report.partition_timings.get(phase, 0.0) + seconds
            report.python_cpu_s += result.python_cpu_s
            if result.server_cpu_s is not None:
                report.server_cpu_s = (report.server_cpu_s or 0.0) + result.server_cpu_s
        helper = await connect(self.settings, "replay-indexer")
        pids = [conn.get_server_pid(), helper.get_server_pid()]
        try:
            cpu_before = _backend_cpu_seconds(pids)
            started = time.perf_counter()
            await _run_parallel([conn, helper], await self._index_jobs(conn, schema, report))
            report.timings["indexes"] = time.perf_counter() - started
            cpu_after = _backend_cpu_seconds(pids)
            if cpu_before is not None and cpu_after is not None:
                report.server_cpu_indexes_s = cpu_after - cpu_before
        finally:
            await helper.close()

    async def _index_jobs(self, conn: asyncpg.Connection, schema: str, report: ReplayReport) -> list[Job]:
        """Per table: the primary key, the live indexes under their live names, then ANALYZE."""
        q = quote_ident(schema)
        jobs: list[Job] = []
        for table in sorted(TABLE_NAMES, key=lambda t: -report.rows.get(t, 0)):
            statements: list[str] = []
            constraints = await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY contype, conname",
                f"read.{table}",
            )
            for name, definition in constraints:
                statements.append(f"ALTER TABLE {q}.{table} ADD CONSTRAINT {quote_ident(name)} {definition}")
            indexes = await conn.fetch(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = $1::regclass AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY i.indexrelid",
                f"read.{table}",
            )
            for (definition,) in indexes:
                marker = f" ON read.{table} "
                if marker not in definition:
                    raise ReplayError(f"cannot re-target index definition: {definition}")
                statements.append(definition.replace(marker, f" ON {q}.{table} ", 1))
            # Statistics for the columns the indexes cover (what the API and admin filter on): a full
            # ANALYZE also samples the wide text/JSONB columns and cost as much as all indexes together.
            analyzed = await conn.fetch(
                "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass ORDER BY 1",
                f"read.{table}",
            )
            columns = ", ".join(quote_ident(r[0]) for r in analyzed)
            statements.append(f"ANALYZE {q}.{table}" + (f" ({columns})" if columns else ""))
            jobs.append(_statements_job(statements))
        jobs.append(_statements_job([f"ALTER TABLE {q}.{POSITIONS_TABLE} ADD PRIMARY KEY (stream_id)"]))
        return jobs

    async def _sync_and_finish(self, conn: asyncpg.Connection, schema: str, head: int, report: ReplayReport) -> None:
        """Under the exclusive lock: both sides to the same per-stream versions, then swap or compare."""
        rebuild = Target(schema=schema, positions=f"{quote_ident(schema)}.{POSITIONS_TABLE}")
        live = Target()
        read_stream = stream_reader(conn)
        started = time.perf_counter()
        tx = conn.transaction()
        await tx.start()
        finished = False
        try:
            await conn.execute("SET LOCAL lock_timeout = '60s'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTOR_LOCK_KEY)
            locked_at = time.perf_counter()
            # 1. the log's tail since the bulk phase, into the rebuild
            after = head
            while True:
                rows = await conn.fetch(
                    f"SELECT {ROW_COLUMNS} FROM eventstore.events WHERE position > $1 ORDER BY position LIMIT $2",
                    after, self.options.page_size,
                )
                if not rows:
                    break
                after = rows[-1][0]
                events = [from_row(r) for r in rows]
                result = await apply_events(conn, rebuild, events, read_stream, lock_shared=False)
                report.caught_up_events += result.applied + result.gap_filled
            # 2. streams where one side is ahead (late commits, events the projector applied that the
            #    bulk read missed, or the other way round): bring the other side to the same version
            diff = await conn.fetch(
                f"SELECT coalesce(l.stream_id, r.stream_id), coalesce(l.version, 0), coalesce(r.version, 0) "
                f"FROM {live.positions} l FULL JOIN {rebuild.positions} r ON r.stream_id = l.stream_id "
                "WHERE coalesce(l.version, 0) <> coalesce(r.version, 0)"
            )
            rebuild_behind = {s: (rv, lv) for s, lv, rv in diff if rv < lv}
            live_behind = {s: (lv, rv) for s, lv, rv in diff if lv < rv}
            report.reconciled_streams = len(diff)
            for chunk in _chunks(rebuild_behind):
                events = await read_streams(conn, chunk)
                result = await apply_events(conn, rebuild, events, read_stream, lock_shared=False)
                report.caught_up_events += result.applied + result.gap_filled
            if self.options.mode == "swap" and set(self.tables) == set(TABLE_NAMES):
                # every read table is replaced: the live positions simply become the rebuild's
                await conn.execute(
                    f"INSERT INTO {live.positions} (stream_id, version, position, updated_at) "
                    f"SELECT stream_id, version, position, clock_timestamp() FROM {rebuild.positions} "
                    "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, "
                    "position = EXCLUDED.position, updated_at = EXCLUDED.updated_at "
                    "WHERE stream_positions.version <> EXCLUDED.version"
                )
            else:
                # the live tables that stay (or, for a check, all of them) get what the rebuild has
                for chunk in _chunks(live_behind):
                    events = await read_streams(conn, chunk)
                    await apply_events(conn, live, events, read_stream, lock_shared=False)
            report.timings["catch_up"] = time.perf_counter() - locked_at
            if self.options.mode == "check":
                report.differences = await compare(conn, schema, self.tables)
                finished = True
                await tx.rollback()  # a check never changes the live read models
            else:
                await self._swap(conn, schema, report)
                finished = True
                await tx.commit()
            report.timings["paused"] = time.perf_counter() - locked_at
        except BaseException:
            if not finished:
                await tx.rollback()
            raise
        report.timings["sync"] = time.perf_counter() - started

    async def _swap(self, conn: asyncpg.Connection, schema: str, report: ReplayReport) -> None:
        old = quote_ident(f"read_old_{report.run_id}")
        q = quote_ident(schema)
        await conn.execute(f"CREATE SCHEMA {old}")
        for table in self.tables:
            await conn.execute(f"ALTER TABLE read.{table} SET SCHEMA {old}")
            await conn.execute(f"ALTER TABLE {q}.{table} SET SCHEMA read")
        if not self.options.keep:
            await conn.execute(f"DROP SCHEMA {old} CASCADE")
        log.info("replay_swapped", run_id=report.run_id, tables=self.tables)


async def compare(conn: asyncpg.Connection, schema: str, tables: Sequence[str]) -> list[Difference]:
    """Every difference between `read.<table>` and `<schema>.<table>`, column by column."""
    q = quote_ident(schema)
    differences: list[Difference] = []
    for table in tables:
        spec = TABLES[table]
        key = spec.key
        changed = " OR ".join(f"l.{c} IS DISTINCT FROM r.{c}" for c in spec.column_names if c != key)
        rows = await conn.fetch(
            f"SELECT coalesce(l.{key}, r.{key})::text, to_jsonb(l)::text, to_jsonb(r)::text "
            f"FROM read.{table} l FULL JOIN {q}.{table} r ON r.{key} = l.{key} "
            f"WHERE l.{key} IS NULL OR r.{key} IS NULL OR {changed} ORDER BY 1"
        )
        for key_value, live_json, rebuilt_json in rows:
            live_row = orjson.loads(live_json) if live_json else None
            rebuilt_row = orjson.loads(rebuilt_json) if rebuilt_json else None
            if live_row is None or rebuilt_row is None:
                differences.append(
                    Difference(table, key_value, "(row)", "present" if live_row else "missing",
                               "present" if rebuilt_row else "missing")
                )
                continue
            for column in spec.column_names:
                if live_row.get(column) != rebuilt_row.get(column):
                    differences.append(Difference(table, key_value, column, live_row.get(column), rebuilt_row.get(column)))
    return differences
