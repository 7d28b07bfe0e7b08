"""What a team workspace on DuckLake (Postgres catalog) would cost Winnow, against a native DuckDB file.

Winnow itself runs DuckDB 2.0, for which the `ducklake` and `postgres` extensions cannot be
installed offline; PyPI has them as wheels for DuckDB 1.5.5, so this benchmark runs in its own
virtual environment, imports nothing from `core/`, makes its rows itself, and compares DuckLake
with a native DuckDB 1.5.5 file in the same run (same rows, same process, same machine):

    python3 -m venv /tmp/dlvenv
    /tmp/dlvenv/bin/pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \\
        duckdb-extension-postgres-scanner==1.5.5
    # (duckdb-extension-postgres ships the same binary as postgres.duckdb_extension, which
    #  LOAD rejects: the entry point is named after the extension, postgres_scanner.)

Postgres (Debian's postgresql 15; it refuses to run as root, so a throwaway cluster as `postgres`):

    mkdir -p /tmp/dlpgdata && chown postgres:postgres /tmp/dlpgdata
    su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/initdb -D /tmp/dlpgdata/data -U postgres -A trust \\
        && /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/dlpgdata/data -l /tmp/dlpgdata/pg.log \\
           -o '-p 55432 -k /tmp/dlpgdata -c listen_addresses=127.0.0.1' -w start"
    /usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p 55432 -U postgres -c "create database winnow_lake"
    WINNOW_PG_DSN="dbname=winnow_lake host=127.0.0.1 port=55432 user=postgres" \\
        /tmp/dlvenv/bin/python bench/bench_ducklake.py 100000

The benchmark starts nothing but its own two writer processes: it connects to the DSN in
`WINNOW_PG_DSN`, keeps its catalog in a fresh Postgres schema (dropped at the end) and its Parquet
files in a temporary directory. Postgres on the same host is the best case: a team's catalog is a
network round trip away, which every commit and every query's snapshot lookup pays.

Figures (one JSON line each, then a markdown table):
1. bulk insert of N instruction-like rows (the native figure includes its CHECKPOINT);
2. a job-shard-like commit (16 rows, one transaction) ×50, with DuckLake's default data inlining
   and with inlining raised above the shard size; Parquet files and inlined rows it left;
3. Explore-like reads: a filtered count and one page of 50, and the floor under any query
   (counting a one-row table);
4. two writer processes committing 16-row transactions into one table for ~10 s: commits/s,
   conflicts, and whether every row is there once; then 5 s more with DuckLake's commit retry
   off (ducklake_max_retry_count = 0), to count the conflicts that retry absorbs;
5. deduplicating insert: DuckLake's anti-join (no PRIMARY KEY/UNIQUE) against `INSERT OR IGNORE` on a
   native table with a primary key;
6. a fresh process's open + first count (extension LOAD, ATTACH, snapshot lookup) vs opening the file.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb

SHARD_ROWS = 16
SHARD_COMMITS = 50
READ_REPEATS = 40
WRITER_SECONDS = 10.0
DEDUP_REPEATS = 10
DEDUP_BATCHES = (16, 2000)

DATASETS = ["math", "reasoning", "code_generation", "open_qa", "summarization", "translation", "rewriting"]
WORDS = ("the a model data answer question learn value system large small quick brown fox jumps over lazy "
         "dog python list string error table index query round judge score teacher student").split()

COLUMNS = "seq BIGINT, id VARCHAR, text VARCHAR, input VARCHAR, dataset VARCHAR"
# Rows seq in [start, stop): content-hash ids, 10–59 words of text (about 200 characters), a dataset label.
# Generated inside DuckDB so that both stores insert the very same rows and Python is not what is timed.
ROWS_SQL = f"""
SELECT i AS seq, md5('row-' || i) AS id,
       array_to_string(list_transform(range((10 + hash(i) % 50)::BIGINT),
                       lambda k: {WORDS!r}[(1 + hash(i * 131 + k) % {len(WORDS)})::BIGINT]), ' ') || ' #' || i AS text,
       '' AS input, {DATASETS!r}[(1 + hash(i * 7) % {len(DATASETS)})::BIGINT] AS dataset
FROM range(?, ?) r(i)
"""
COUNT_SQL = "SELECT count(*) FROM {t} WHERE dataset = ? AND length(text) BETWEEN ? AND ?"
PAGE_SQL = ("SELECT seq, id, text, dataset FROM {t} WHERE dataset = ? AND length(text) BETWEEN ? AND ? "
            "ORDER BY seq LIMIT 50 OFFSET ?")
SHARD_INSERT_SQL = "INSERT INTO {t} VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * SHARD_ROWS)
DEDUP_ANTI_JOIN_SQL = ("INSERT INTO {t} SELECT * FROM batch "
                       "WHERE NOT EXISTS (SELECT 1 FROM {t} AS old WHERE old.id = batch.id)")
DEDUP_OR_IGNORE_SQL = "INSERT OR IGNORE INTO {t} SELECT * FROM batch"


# ---------------------------------------------------------------------------------------------- setup

def extension_file(module_name: str) -> str:
    """The wheels ship `extensions/v<version>/<name>.duckdb_extension` and no loader code: LOAD by path."""
    module = __import__(module_name)
    return str(next(Path(module.__file__).parent.glob("extensions/*/*.duckdb_extension")))


def lake_connection(dsn: str, schema: str, data_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"LOAD '{extension_file('duckdb_extension_ducklake')}'")
    con.execute(f"LOAD '{extension_file('duckdb_extension_postgres_scanner')}'")
    con.execute(f"ATTACH 'ducklake:postgres:{dsn}' AS lake (DATA_PATH '{data_path}/', METADATA_SCHEMA '{schema}')")
    return con


def stage_rows(con: duckdb.DuckDBPyConnection, name: str, start: int, stop: int) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {ROWS_SQL}", [start, stop])


def shard_params(tag: str, k: int) -> list:
    rng = random.Random(f"{tag}-{k}")
    params = []
    for j in range(SHARD_ROWS):
        text = " ".join(rng.choices(WORDS, k=rng.randint(25, 45)))
        params += [k * SHARD_ROWS + j, f"{tag}-{k}-{j}", text, "", rng.choice(DATASETS)]
    return params


# -------------------------------------------------------------------------------------------- figures

def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


RESULTS: list[dict] = []


def report(name: str, **fields) -> None:
    record = {"bench": name, **fields}
    RESULTS.append(record)
    print(json.dumps(record), flush=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_bulk(lake, native, rows: int) -> None:
    for con in (lake, native):
        stage_rows(con, "staging", 0, rows)
    lake.execute(f"CREATE TABLE lake.samples ({COLUMNS})")
    native.execute(f"CREATE TABLE samples ({COLUMNS})")
    native.execute(f"CREATE TABLE samples_pk ({COLUMNS}, PRIMARY KEY (id))")
    lake_s = timed(lambda: lake.execute("INSERT INTO lake.samples SELECT * FROM staging"))
    native_s = timed(lambda: (native.execute("INSERT INTO samples SELECT * FROM staging"), native.execute("CHECKPOINT")))
    native_pk_s = timed(lambda: (native.execute("INSERT INTO samples_pk SELECT * FROM staging"),
                                 native.execute("CHECKPOINT")))
    mean_chars = native.execute("SELECT round(avg(length(text))) FROM samples").fetchone()[0]
    files = lake.execute("SELECT file_count FROM ducklake_table_info('lake') WHERE table_name = 'samples'").fetchone()[0]
    report("ducklake_bulk_insert", rows=rows, mean_text_chars=mean_chars, ducklake_s=round(lake_s, 3),
           native_s=round(native_s, 3), native_with_pk_s=round(native_pk_s, 3), ratio=round(lake_s / native_s, 2),
           ducklake_parquet_files=files)


def lake_file_counts(lake, schema: str, table: str) -> tuple[int, int]:
    """(Parquet files, rows inlined in the catalog) of one DuckLake table: no deletes here, so the
    rows not counted in any data file live in the catalog's inlined-data table."""
    total = lake.execute(f"SELECT count(*) FROM lake.{table}").fetchone()[0]
    files, in_files = lake.execute(
        f"SELECT count(*), coalesce(sum(f.record_count), 0) FROM __ducklake_metadata_lake.{schema}.ducklake_data_file f "
        f"JOIN __ducklake_metadata_lake.{schema}.ducklake_table t USING (table_id) "
        "WHERE t.table_name = ? AND f.end_snapshot IS NULL", [table]).fetchone()
    return files, total - in_files


def shard_commits(con, table: str, tag: str) -> list[float]:
    sql = SHARD_INSERT_SQL.format(t=table)

    def commit(k: int) -> None:
        con.execute("BEGIN")
        con.execute(sql, shard_params(tag, k))
        con.execute("COMMIT")

    return [timed(lambda: commit(k)) for k in range(SHARD_COMMITS)]  # noqa: B023 (called at once)


def bench_shard_commits(lake, native, schema: str) -> None:
    default_limit = int(lake.execute("SELECT current_setting('ducklake_default_data_inlining_row_limit')").fetchone()[0])
    native.execute(f"CREATE TABLE shards ({COLUMNS})")
    native_ms = shard_commits(native, "shards", "native")
    for variant, limit in (("default_inlining", None), ("inlining_limit_1000", 1000)):
        table = f"shards_{variant}"
        lake.execute(f"CREATE TABLE lake.{table} ({COLUMNS})")
        if limit is not None:
            lake.execute(f"CALL lake.set_option('data_inlining_row_limit', {limit}, table_name => '{table}')")
        lake_ms = shard_commits(lake, f"lake.{table}", variant)
        files, inlined = lake_file_counts(lake, schema, table)
        fields = {}
        if limit is not None:  # what turning the inlined rows into one Parquet file costs afterwards
            flush_s = timed(lambda: lake.execute("CALL ducklake_flush_inlined_data('lake')"))  # noqa: B023
            fields = {"flush_inlined_s": round(flush_s, 3),
                      "after_flush_files_inlined": list(lake_file_counts(lake, schema, table))}
        report(f"ducklake_shard_commit_{variant}", rows_per_commit=SHARD_ROWS, commits=SHARD_COMMITS,
               inlining_row_limit=limit if limit is not None else default_limit,
               default_inlining_row_limit=default_limit,
               ducklake_p50_ms=ms(statistics.median(lake_ms)), ducklake_p95_ms=ms(p95(lake_ms)),
               native_p50_ms=ms(statistics.median(native_ms)), native_p95_ms=ms(p95(native_ms)),
               ratio=round(statistics.median(lake_ms) / statistics.median(native_ms), 2),
               ducklake_parquet_files=files, ducklake_inlined_rows=inlined, **fields)


def bench_reads(lake, native, rows: int) -> None:
    rng = random.Random(1)
    queries = [(rng.choice(DATASETS), lo, lo + 60, rng.randint(0, 20) * 50)
               for lo in (rng.randint(100, 250) for _ in range(READ_REPEATS))]
    stores = {"ducklake": (lake, "lake.samples"), "native": (native, "samples")}
    samples = {(store, kind): [] for store in stores for kind in ("count", "page")}
    answers = {}
    for con, table in stores.values():  # warm both once (DuckLake: the snapshot and file list)
        con.execute(COUNT_SQL.format(t=table), list(queries[0][:3])).fetchall()
    for k, (dataset, lo, hi, offset) in enumerate(queries):  # interleaved: both see the same machine state
        for store, (con, table) in stores.items():
            start = time.perf_counter()
            count = con.execute(COUNT_SQL.format(t=table), [dataset, lo, hi]).fetchone()[0]
            samples[(store, "count")].append(time.perf_counter() - start)
            start = time.perf_counter()
            page = con.execute(PAGE_SQL.format(t=table), [dataset, lo, hi, offset]).fetchall()
            samples[(store, "page")].append(time.perf_counter() - start)
            answers[(store, k)] = (count, [r[1] for r in page])
    same = all(answers[("ducklake", k)] == answers[("native", k)] for k in range(READ_REPEATS))
    # The floor under every query: a count of a one-row table (DuckLake: snapshot and file-list lookups)
    lake.execute(f"CREATE TABLE lake.one_row ({COLUMNS})")
    native.execute(f"CREATE TABLE one_row ({COLUMNS})")
    for con, table in ((lake, "lake.one_row"), (native, "one_row")):
        con.execute(f"INSERT INTO {table} SELECT * FROM staging LIMIT 1")
    floor = {store: [timed(lambda: con.execute(f"SELECT count(*) FROM {table}").fetchall())  # noqa: B023
                     for _ in range(READ_REPEATS)]
             for store, (con, table) in (("ducklake", (lake, "lake.one_row")), ("native", (native, "one_row")))}
    report("ducklake_query_floor", repeats=READ_REPEATS, ducklake_p50_ms=ms(statistics.median(floor["ducklake"])),
           ducklake_p95_ms=ms(p95(floor["ducklake"])), native_p50_ms=ms(statistics.median(floor["native"])),
           native_p95_ms=ms(p95(floor["native"])),
           ratio=round(statistics.median(floor["ducklake"]) / statistics.median(floor["native"]), 1))
    for kind in ("count", "page"):
        lake_s, native_s = samples[("ducklake", kind)], samples[("native", kind)]
        report(f"ducklake_explore_{kind}", rows=rows, repeats=READ_REPEATS,
               ducklake_p50_ms=ms(statistics.median(lake_s)), ducklake_p95_ms=ms(p95(lake_s)),
               native_p50_ms=ms(statistics.median(native_s)), native_p95_ms=ms(p95(native_s)),
               ratio=round(p95(lake_s) / p95(native_s), 2), same_answers=same)


# ---- two writers

def writer_main(dsn: str, schema: str, data_path: str, writer: str, start_at: float, seconds: float,
                table: str, max_retries: int | None) -> None:
    """One writer process: 16-row transactions into lake.<table> until the time is up. A failed
    commit is rolled back and the same rows are retried, as a shard ingest would be. max_retries
    None keeps DuckLake's own commit retry (ducklake_max_retry_count); 0 shows the conflicts it hides."""
    con = lake_connection(dsn, schema, Path(data_path))
    if max_retries is not None:
        con.execute(f"SET ducklake_max_retry_count = {max_retries}")
    sql = SHARD_INSERT_SQL.format(t=f"lake.{table}")
    commits, failures, errors, latencies = 0, 0, {}, []
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < start_at + seconds:
        params = shard_params(writer, commits)
        start = time.perf_counter()
        try:
            con.execute("BEGIN")
            con.execute(sql, params)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            failures += 1
            key = str(exc).splitlines()[0][:160]
            errors[key] = errors.get(key, 0) + 1
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            continue
        latencies.append(time.perf_counter() - start)
        commits += 1
    print(json.dumps({"writer": writer, "commits": commits, "failures": failures, "errors": errors,
                      "p50_ms": ms(statistics.median(latencies)) if latencies else None,
                      "p95_ms": ms(p95(latencies)) if latencies else None, "seconds": seconds}), flush=True)


def native_two_writers(native, seconds: float) -> list[dict]:
    """The native baseline: one process (Winnow's owner) with two threads, each its own cursor,
    committing the same transactions into one table."""
    native.execute(f"CREATE TABLE concurrent ({COLUMNS})")
    sql = SHARD_INSERT_SQL.format(t="concurrent")
    results = []
    start_at = time.time() + 0.2

    def run(writer: str) -> None:
        cur = native.cursor()
        commits, failures = 0, 0
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < start_at + seconds:
            try:
                cur.execute("BEGIN")
                cur.execute(sql, shard_params(writer, commits))
                cur.execute("COMMIT")
                commits += 1
            except duckdb.Error:
                failures += 1
                cur.execute("ROLLBACK")
        results.append({"writer": writer, "commits": commits, "failures": failures})

    threads = [threading.Thread(target=run, args=(f"n{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def second_process_opens(native_path: Path) -> str:
    """What a second process gets when it opens the native file the first one holds."""
    code = f"import duckdb\ntry:\n    duckdb.connect({str(native_path)!r})\n    print('opened')\nexcept Exception as e:\n    print(type(e).__name__ + ': ' + str(e).splitlines()[0][:120])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()


def tally(con, table: str, prefixes: list[str], commits: dict[str, int]) -> dict:
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
    per_writer = {p: con.execute(f"SELECT count(*) FROM {table} WHERE id LIKE ?", [p + "-%"]).fetchone()[0]
                  for p in prefixes}
    expected = SHARD_ROWS * sum(commits.values())
    return {"rows": total, "expected_rows": expected, "duplicated": total - distinct,
            "lost": sum(max(0, SHARD_ROWS * commits[p] - per_writer[p]) for p in prefixes),
            "extra": sum(max(0, per_writer[p] - SHARD_ROWS * commits[p]) for p in prefixes)}


def lake_two_writers(dsn: str, schema: str, data_path: Path, table: str, seconds: float,
                     max_retries: int | None) -> list[dict]:
    start_at = time.time() + 4.0  # both processes load, attach and wait, then start together
    procs = [subprocess.Popen([sys.executable, __file__, "--writer", dsn, schema, str(data_path), f"{table}{i}",
                               str(start_at), str(seconds), table, str(max_retries)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=seconds + 120) for p in procs]
    writers = []
    for (stdout, stderr), proc in zip(outs, procs, strict=True):
        if proc.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"writer process exited {proc.returncode}: {stderr[-800:]}")
        writers.append(json.loads(stdout.strip().splitlines()[-1]))
    return writers


def bench_two_writers(lake, native, native_path: Path, dsn: str, schema: str, data_path: Path) -> None:
    for table, seconds, max_retries in (("concurrent", WRITER_SECONDS, None), ("noretry", WRITER_SECONDS / 2, 0)):
        lake.execute(f"CREATE TABLE lake.{table} ({COLUMNS})")
        writers = lake_two_writers(dsn, schema, data_path, table, seconds, max_retries)
        lake_tally = tally(lake, f"lake.{table}", [w["writer"] for w in writers],
                           {w["writer"]: w["commits"] for w in writers})
        files, inlined = lake_file_counts(lake, schema, table)
        fields = dict(
            seconds=seconds, rows_per_commit=SHARD_ROWS,
            ducklake_max_retry_count="default (10)" if max_retries is None else max_retries,
            ducklake_commits_per_s=[round(w["commits"] / seconds, 1) for w in writers],
            ducklake_failed_commits=[w["failures"] for w in writers],
            ducklake_errors=[w["errors"] for w in writers],
            ducklake_commit_p50_ms=[w["p50_ms"] for w in writers], ducklake_commit_p95_ms=[w["p95_ms"] for w in writers],
            ducklake_lost=lake_tally["lost"], ducklake_duplicated=lake_tally["duplicated"],
            ducklake_extra=lake_tally["extra"], ducklake_rows=lake_tally["rows"],
            ducklake_expected_rows=lake_tally["expected_rows"], ducklake_parquet_files=files,
            ducklake_inlined_rows=inlined)
        if max_retries is not None:
            report("ducklake_two_writers_no_commit_retry", **fields)
            continue
        native_writers = native_two_writers(native, seconds)
        native_tally = tally(native, "concurrent", [w["writer"] for w in native_writers],
                             {w["writer"]: w["commits"] for w in native_writers})
        lake_rate = sum(w["commits"] for w in writers) / seconds
        native_rate = sum(w["commits"] for w in native_writers) / seconds
        report("ducklake_two_writers", **fields,
               native_one_process_two_threads_commits_per_s=[round(w["commits"] / seconds, 1)
                                                             for w in native_writers],
               native_lost=native_tally["lost"], native_duplicated=native_tally["duplicated"],
               native_second_process=second_process_opens(native_path),
               ratio=round(lake_rate / native_rate, 3))


# ---- dedup

def bench_dedup(lake, native, rows: int) -> None:
    for batch_rows in DEDUP_BATCHES:
        half = batch_rows // 2
        samples = {"ducklake_anti_join": [], "native_or_ignore_pk": [], "native_anti_join": []}
        for rep in range(DEDUP_REPEATS):
            # half the batch already stored (ids from the bulk rows), half new
            old_start = (rep * 7919 * batch_rows) % (rows - half)
            new_start = rows + 10_000_000 * (batch_rows == DEDUP_BATCHES[-1]) + rep * half
            for con in (lake, native):
                stage_rows(con, "batch_old", old_start, old_start + half)
                stage_rows(con, "batch_new", new_start, new_start + half)
                con.execute("CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM batch_old UNION ALL SELECT * FROM batch_new")
            for name, con, sql, table in (
                    ("ducklake_anti_join", lake, DEDUP_ANTI_JOIN_SQL, "lake.samples"),
                    ("native_or_ignore_pk", native, DEDUP_OR_IGNORE_SQL, "samples_pk"),
                    ("native_anti_join", native, DEDUP_ANTI_JOIN_SQL, "samples")):
                before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                samples[name].append(timed(lambda: con.execute(sql.format(t=table))))  # noqa: B023
                added = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before
                if added != half:
                    raise AssertionError(f"{name}: batch of {batch_rows} added {added} rows, expected {half}")
        lake_s, pk_s, anti_s = (samples[k] for k in ("ducklake_anti_join", "native_or_ignore_pk", "native_anti_join"))
        report(f"ducklake_dedup_insert_{batch_rows}", rows=rows, batch_rows=batch_rows, new_rows=half,
               repeats=DEDUP_REPEATS, ducklake_anti_join_p50_ms=ms(statistics.median(lake_s)),
               ducklake_anti_join_p95_ms=ms(p95(lake_s)),
               native_or_ignore_pk_p50_ms=ms(statistics.median(pk_s)), native_or_ignore_pk_p95_ms=ms(p95(pk_s)),
               native_anti_join_p50_ms=ms(statistics.median(anti_s)),
               ratio=round(statistics.median(lake_s) / statistics.median(pk_s), 2), all_correct=True)


def bench_open(dsn: str, schema: str, data_path: Path, native_path: Path) -> None:
    """A fresh process's first answer: connect (and for DuckLake load, attach) and count a table."""
    def lake_first() -> None:
        con = lake_connection(dsn, schema, data_path)
        con.execute("SELECT count(*) FROM lake.samples").fetchall()
        con.close()

    def native_first() -> None:
        con = duckdb.connect(str(native_path), read_only=True)
        con.execute("SELECT count(*) FROM samples").fetchall()
        con.close()

    def load_only() -> None:
        con = duckdb.connect()
        con.execute(f"LOAD '{extension_file('duckdb_extension_ducklake')}'")
        con.execute(f"LOAD '{extension_file('duckdb_extension_postgres_scanner')}'")
        con.close()

    lake_s = [timed(lake_first) for _ in range(5)]
    load_s = [timed(load_only) for _ in range(5)]
    native_s = [timed(native_first) for _ in range(5)]
    report("ducklake_open_and_first_count", repeats=5, ducklake_p50_ms=ms(statistics.median(lake_s)),
           of_which_extension_load_p50_ms=ms(statistics.median(load_s)),
           native_p50_ms=ms(statistics.median(native_s)),
           ratio=round(statistics.median(lake_s) / statistics.median(native_s), 2))


# ------------------------------------------------------------------------------------------------ main

def markdown_table(records: list[dict]) -> str:
    def pick(record: dict, *keys: str):
        return next((record[k] for k in keys if k in record), "")

    lines = ["| figure | DuckLake (Postgres catalog) | native DuckDB file | ratio |", "|---|---|---|---|"]
    for r in records:
        if r["bench"] == "ducklake_bulk_insert":
            lake, native = f"{r['ducklake_s']} s", f"{r['native_s']} s (with PK {r['native_with_pk_s']} s)"
        elif r["bench"] == "ducklake_two_writers_no_commit_retry":
            lake = (f"{r['ducklake_commits_per_s']} commits/s, {r['ducklake_failed_commits']} failed "
                    f"({r['ducklake_errors']}), lost {r['ducklake_lost']}, dup {r['ducklake_duplicated']}")
            native = ""
        elif r["bench"] == "ducklake_two_writers":
            lake = (f"{r['ducklake_commits_per_s']} commits/s, {r['ducklake_failed_commits']} failed, "
                    f"lost {r['ducklake_lost']}, dup {r['ducklake_duplicated']}")
            native = (f"{r['native_one_process_two_threads_commits_per_s']} commits/s (one process, two threads); "
                      f"2nd process: {r['native_second_process'][:60]}")
        elif r["bench"].startswith("ducklake_dedup"):
            lake = f"anti-join p50 {r['ducklake_anti_join_p50_ms']} ms"
            native = (f"OR IGNORE+PK p50 {r['native_or_ignore_pk_p50_ms']} ms "
                      f"(anti-join {r['native_anti_join_p50_ms']} ms)")
        elif r["bench"] == "ducklake_open_and_first_count":
            lake = f"p50 {r['ducklake_p50_ms']} ms (extension LOAD {r['of_which_extension_load_p50_ms']} ms)"
            native = f"p50 {r['native_p50_ms']} ms"
        else:
            lake = f"p50 {pick(r, 'ducklake_p50_ms')} / p95 {pick(r, 'ducklake_p95_ms')} ms"
            native = f"p50 {pick(r, 'native_p50_ms')} / p95 {pick(r, 'native_p95_ms')} ms"
            if "ducklake_parquet_files" in r:
                lake += f"; {r['ducklake_parquet_files']} files, {r['ducklake_inlined_rows']} rows inlined"
        lines.append(f"| {r['bench']} | {lake} | {native} | {r.get('ratio', '')} |")
    return "\n".join(lines)


def main(rows: int) -> None:
    dsn = os.environ.get("WINNOW_PG_DSN")
    if not dsn:
        sys.exit("WINNOW_PG_DSN is not set: give the Postgres DSN for the catalog (see this file's docstring)")
    schema = f"winnow_bench_{os.getpid()}_{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="bench_ducklake_") as tmp:
        data_path, native_path = Path(tmp) / "lake_data", Path(tmp) / "native.duckdb"
        lake = lake_connection(dsn, schema, data_path)
        native = duckdb.connect(str(native_path))
        try:
            print(json.dumps({"machine": {"cpus": os.cpu_count(), "duckdb": duckdb.__version__,
                                          "load_avg_1m": round(os.getloadavg()[0], 2),
                                          "catalog": "postgres " + lake.execute(
                                              "SELECT version FROM postgres_query('__ducklake_metadata_lake', "
                                              "'SELECT version()')").fetchone()[0][:16]}}), flush=True)
            bench_bulk(lake, native, rows)
            bench_reads(lake, native, rows)
            bench_shard_commits(lake, native, schema)
            bench_dedup(lake, native, rows)
            bench_two_writers(lake, native, native_path, dsn, schema, data_path)
            native.close()
            bench_open(dsn, schema, data_path, native_path)
        finally:
            try:
                lake.execute(f"CALL postgres_execute('__ducklake_metadata_lake', 'DROP SCHEMA IF EXISTS {schema} CASCADE')")
            except duckdb.Error as exc:
                print(f"could not drop catalog schema {schema}: {exc}", file=sys.stderr)
            lake.close()
    print()
    print(markdown_table(RESULTS))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        _, _, dsn_arg, schema_arg, path_arg, writer_arg, start_arg, seconds_arg, table_arg, retries_arg = sys.argv
        writer_main(dsn_arg, schema_arg, path_arg, writer_arg, float(start_arg), float(seconds_arg), table_arg,
                    None if retries_arg == "None" else int(retries_arg))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
