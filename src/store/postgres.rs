//! The shared store: PostgreSQL, for several hosts on one database.
//!
//! Every write is one transaction on a pooled connection. A step commit locks its session's
//! row first (`SELECT ... FOR UPDATE`), so the sequence check, the lease check and the
//! writes see one consistent session, and commits of one session are serialized across
//! hosts while commits of different sessions run in parallel. Concurrent commits share
//! PostgreSQL's WAL flushes (its own group commit), so no batching is needed here.
//!
//! Snapshot chunks are `bytea` rows addressed by their sha256 and reference-counted. Chunks
//! are shared between sessions (identical tool states chunk identically), so transactions
//! lock them in hash order and retry on deadlock or serialization failure.
//! Lease expiry is judged by the database server's clock, the one clock all hosts share.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::lease::LeaseRow;
use super::runs::{DUE_WAITS_FIRST, check_version};
use super::url::redact_password;
use super::{
    AuditEvent, AuditScope, Lease, PendingStep, SessionRecord, SessionSummary, SnapshotInfo, StateScope, StateUsage,
    StateWrite, StepCommit, StepRecord, StorageStats, Store, StoreError, chunk_snapshot,
};
use super::{RunRecord, RunStatus};
use super::{TaskRecord, TaskScope, tasks::check_task_version};
use crate::contract::workspace::{FileChange, Manifest, manifest_at};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        seed BYTEA NOT NULL,
        forked_from TEXT,
        forked_at BIGINT,
        created_at_ms BIGINT NOT NULL,
        last_step BIGINT NOT NULL,
        lease_holder TEXT,
        lease_token BIGINT NOT NULL DEFAULT 0,
        lease_expires_ms BIGINT NOT NULL DEFAULT 0
    );
    -- COLLATE "C": keys sort by byte order, as the Store contract says, and prefix scans
    -- use the primary key.
    CREATE TABLE state (
        session TEXT NOT NULL,
        tool TEXT COLLATE "C" NOT NULL,
        namespace TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (session, tool, namespace, key)
    );
    CREATE TABLE steps (
        session TEXT NOT NULL,
        seq BIGINT NOT NULL,
        tool TEXT NOT NULL,
        digest TEXT NOT NULL,
        input TEXT NOT NULL,
        outcome BYTEA NOT NULL,
        journal BYTEA,
        writes BYTEA NOT NULL,
        random BYTEA NOT NULL,
        committed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (session, seq)
    );
    CREATE INDEX steps_by_tool ON steps (session, tool, seq);
    CREATE TABLE snapshots (
        session TEXT NOT NULL,
        tool TEXT NOT NULL,
        seq BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        chunks BYTEA NOT NULL,
        PRIMARY KEY (session, tool, seq)
    );
    CREATE TABLE chunks (
        hash BYTEA PRIMARY KEY,
        data BYTEA NOT NULL,
        refs BIGINT NOT NULL
    );
    CREATE TABLE pending (
        session TEXT PRIMARY KEY,
        record BYTEA NOT NULL
    );
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        session TEXT NOT NULL,
        tool TEXT NOT NULL,
        capability TEXT NOT NULL,
        request TEXT NOT NULL,
        allowed BOOLEAN NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX audit_by_session ON audit (session, id);
"#,
    // The step's workspace changes (NULL: none); their chunks live in `chunks`, one
    // reference per step naming them.
    r#"
    ALTER TABLE steps ADD COLUMN files BYTEA;
"#,
    // Agent runs (`runs.rs`), one per session that has one.
    r#"
    CREATE TABLE runs (
        session TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        ready_at_ms BIGINT,
        version BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX runs_ready ON runs (ready_at_ms) WHERE ready_at_ms IS NOT NULL;
"#,
    // Tasks (`tasks.rs`): MCP task handles, independent of sessions.
    r#"
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        session TEXT,
        expires_at_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX tasks_session ON tasks (session) WHERE session IS NOT NULL;
    CREATE INDEX tasks_expiry ON tasks (expires_at_ms);
"#,
    // A task's claim in a column, so a server finds the orphans of a dead one.
    r#"
    ALTER TABLE tasks ADD COLUMN claimed_until_ms BIGINT;
    CREATE INDEX tasks_claim ON tasks (claimed_until_ms) WHERE claimed_until_ms IS NOT NULL;
"#,
];

/// The server's clock in milliseconds since the Unix epoch (lease expiry).
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Connections per host; a step commit holds one for a few round trips.
const DEFAULT_POOL: usize = 16;
/// A transaction that deadlocked or failed serialization is retried this many times.
const ATTEMPTS: usize = 8;

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
    url: String,
    /// How to connect, for the connection that listens for run changes.
    config: tokio_postgres::Config,
    /// That connection and what it wakes, once a worker first waits (again if it dropped).
    listener: tokio::sync::Mutex<Option<std::sync::Arc<RunListener>>>,
}

/// A failure inside a transaction: retried when PostgreSQL says so.
enum Failure {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Failure {
    fn retryable(&self) -> bool {
        matches!(self, Self::Pg(e) if e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE))
    }

    fn into_store(self) -> StoreError {
        match self {
            Self::Pg(e) => pg_error(e),
            Self::Store(e) => e,
        }
    }
}

/// A tokio-postgres error, kept as the source; a database error's SQLSTATE code is in the
/// context (its message is the source's).
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::backend(format!("postgres ({})", db.code().code()), e),
        None => StoreError::backend("postgres", e),
    }
}

use super::{decode_journal, decode_random, decode_record as decode, encode_journal, encode_record as encode};

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://user:pass@host:port/db`) and
    /// migrates it. Several hosts may connect and migrate at once.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_pool(url, DEFAULT_POOL).await
    }

    /// Like [`PostgresStore::connect`], with `pool_size` connections at most.
    pub async fn connect_with_pool(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let shown = redact_password(url);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::InvalidUrl { url: shown.clone(), reason: e.to_string() })?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| StoreError::backend(format!("postgres pool for {shown}"), e))?;
        let store = Self { pool, url: shown, config, listener: tokio::sync::Mutex::new(None) };
        store.migrate().await?;
        Ok(store)
    }

    /// The URL connected to, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::backend(format!("postgres at {}", self.url), e))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Serializes hosts migrating the same database at once.
        tx.execute("SELECT pg_advisory_xact_lock(7236501)", &[]).await.map_err(pg_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .map_err(pg_error)?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]).await.map_err(pg_error)?.get(0);
        if current as usize > MIGRATIONS.len() {
            return Err(StoreError::corrupt(format!(
                "the database has schema version {current}; this toolhost knows up to {}",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(|e| StoreError::backend(format!("migration {}", index + 1), e))?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(index as i64 + 1)])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }
}

/// Runs `$work` (a future using the transaction `$tx`) in a transaction, again when
/// PostgreSQL reports a deadlock or a serialization failure (the transaction was rolled back,
/// so retrying is safe).
macro_rules! transact {
    ($store:expr, |$tx:ident| $work:expr) => {{
        let mut client = $store.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let transaction = client.transaction().await?;
                let $tx = &transaction;
                let value = $work.await?;
                transaction.commit().await?;
                Ok::<_, Failure>(value)
            }
            .await;
            match result {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
                result => break result.map_err(Failure::into_store),
            }
        }
    }};
}

/// Locks the session row and checks that a write under `lease` may touch it; returns the
/// session's last step.
async fn lock_session(tx: &Transaction<'_>, session: &str, lease: Option<u64>) -> Result<u64, Failure> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT last_step, lease_holder, lease_token, lease_expires_ms, {NOW_MS} FROM sessions WHERE id = $1 FOR UPDATE"
        ))
        .await?;
    let row = tx.query_opt(&stmt, &[&session]).await?.ok_or_else(|| StoreError::SessionNotFound(session.into()))?;
    let holder: Option<String> = row.get(1);
    let token: i64 = row.get(2);
    LeaseRow { holder: holder.as_deref(), token: token as u64, expires_at_ms: row.get(3) }.admits(
        session,
        lease,
        row.get(4),
    )?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Applies reference-count changes to chunks, locking them in hash order (so transactions
/// sharing chunks cannot deadlock), inserting the new ones from `new_data` and deleting those
/// no longer referenced.
async fn adjust_chunks(
    tx: &Transaction<'_>,
    deltas: &BTreeMap<[u8; 32], i64>,
    new_data: &BTreeMap<[u8; 32], &[u8]>,
) -> Result<(), Failure> {
    let deltas: Vec<(&[u8; 32], i64)> = deltas.iter().map(|(h, d)| (h, *d)).filter(|(_, d)| *d != 0).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let hashes: Vec<&[u8]> = deltas.iter().map(|(h, _)| &h[..]).collect();
    let lock = tx.prepare_cached("SELECT hash FROM chunks WHERE hash = ANY($1) ORDER BY hash FOR UPDATE").await?;
    let existing: std::collections::HashSet<Vec<u8>> =
        tx.query(&lock, &[&hashes]).await?.into_iter().map(|r| r.get(0)).collect();

    let (present, missing): (Vec<_>, Vec<_>) = deltas.iter().partition(|(h, _)| existing.contains(&h[..]));
    if !present.is_empty() {
        let update = tx
            .prepare_cached(
                "UPDATE chunks SET refs = chunks.refs + d.n FROM unnest($1::bytea[], $2::bigint[]) AS d(hash, n)
                 WHERE chunks.hash = d.hash",
            )
            .await?;
        let hashes: Vec<&[u8]> = present.iter().map(|(h, _)| &h[..]).collect();
        let counts: Vec<i64> = present.iter().map(|(_, d)| *d).collect();
        tx.execute(&update, &[&hashes, &counts]).await?;
    }
    let mut inserts: Vec<(&[u8], &[u8], i64)> = Vec::new();
    for (hash, delta) in missing.iter().filter(|(_, d)| *d > 0) {
        let data = new_data.get(*hash).ok_or_else(|| {
            StoreError::corrupt(format!("a reference to chunk {} that the store does not hold", hex::encode(hash)))
        })?;
        inserts.push((&hash[..], *data, *delta));
    }
    if !inserts.is_empty() {
        // Another transaction may insert the same chunk concurrently: then add to it. Rows
        // go in hash order (the order of `deltas`).
        let insert = tx
            .prepare_cached(
                "INSERT INTO chunks (hash, data, refs)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) ORDER BY 1
                 ON CONFLICT (hash) DO UPDATE SET refs = chunks.refs + excluded.refs",
            )
            .await?;
        let hashes: Vec<&[u8]> = inserts.iter().map(|i| i.0).collect();
        let data: Vec<&[u8]> = inserts.iter().map(|i| i.1).collect();
        let counts: Vec<i64> = inserts.iter().map(|i| i.2).collect();
        tx.execute(&insert, &[&hashes, &data, &counts]).await?;
    }
    if deltas.iter().any(|(_, d)| *d < 0) {
        let sweep = tx.prepare_cached("DELETE FROM chunks WHERE hash = ANY($1) AND refs <= 0").await?;
        tx.execute(&sweep, &[&hashes]).await?;
    }
    Ok(())
}

/// Counts the chunk references the file changes of `session`'s steps hold, `delta` each.
async fn count_file_refs(
    tx: &Transaction<'_>,
    deltas: &mut BTreeMap<[u8; 32], i64>,
    session: &str,
    delta: i64,
) -> Result<(), Failure> {
    let rows = tx.query("SELECT files FROM steps WHERE session = $1 AND files IS NOT NULL", &[&session]).await?;
    for row in rows {
        let files: Vec<FileChange> = decode(row.get(0), "step files")?;
        for hash in files.iter().filter_map(|c| c.entry.as_ref()).flat_map(|e| e.chunks()) {
            *deltas.entry(*hash).or_default() += delta;
        }
    }
    Ok(())
}

fn count_hashes(deltas: &mut BTreeMap<[u8; 32], i64>, hashes: &[u8], delta: i64) -> Result<(), StoreError> {
    if !hashes.len().is_multiple_of(32) {
        return Err(StoreError::corrupt("a snapshot's chunk list is not a list of sha256 hashes"));
    }
    for hash in hashes.chunks(32) {
        *deltas.entry(hash.try_into().expect("32 bytes")).or_default() += delta;
    }
    Ok(())
}

async fn apply_writes(tx: &Transaction<'_>, session: &str, tool: &str, writes: &[StateWrite]) -> Result<(), Failure> {
    if writes.is_empty() {
        return Ok(());
    }
    let upsert = tx
        .prepare_cached(
            "INSERT INTO state (session, tool, namespace, key, value) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (session, tool, namespace, key) DO UPDATE SET value = excluded.value",
        )
        .await?;
    let delete =
        tx.prepare_cached("DELETE FROM state WHERE session = $1 AND tool = $2 AND namespace = $3 AND key = $4").await?;
    for w in writes {
        match &w.value {
            Some(value) => tx.execute(&upsert, &[&session, &tool, &w.namespace, &w.key, value]).await?,
            None => tx.execute(&delete, &[&session, &tool, &w.namespace, &w.key]).await?,
        };
    }
    Ok(())
}

async fn commit_step(tx: &Transaction<'_>, commit: &StepCommit) -> Result<(), Failure> {
    let StepCommit { session, step, snapshot, file_chunks, keep_snapshots, lease } = commit;
    step.check_files()?;
    let found = lock_session(tx, session, *lease).await?;
    if found + 1 != step.seq {
        return Err(StoreError::Conflict { session: session.clone(), expected: step.seq - 1, found }.into());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO steps (session, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    let files = (!step.files.is_empty()).then(|| encode(&step.files)).transpose()?;
    let params: [&(dyn ToSql + Sync); 11] = [
        session,
        &(step.seq as i64),
        &step.tool,
        &step.digest,
        &step.input,
        &encode(&step.outcome)?,
        &encode_journal(&step.journal)?,
        &encode(&step.writes)?,
        &encode(&step.random)?,
        &step.committed_at_ms,
        &files,
    ];
    tx.execute(&insert, &params).await?;
    apply_writes(tx, session, &step.tool, &step.writes).await?;

    // One reference-count adjustment for the step's file chunks and its snapshot's, so its
    // chunk locks are taken in one hash order.
    let mut deltas = BTreeMap::new();
    let mut new_data: BTreeMap<[u8; 32], &[u8]> = BTreeMap::new();
    for hash in step.file_chunk_refs() {
        *deltas.entry(*hash).or_default() += 1;
    }
    for chunk in file_chunks {
        new_data.insert(chunk.hash, chunk.data.as_slice());
    }
    let snapshot_chunks = snapshot.as_deref().map(chunk_snapshot);
    if let (Some(bytes), Some(chunks)) = (snapshot, &snapshot_chunks) {
        let mut hashes = Vec::with_capacity(chunks.len() * 32);
        for chunk in chunks {
            *deltas.entry(chunk.hash).or_default() += 1;
            new_data.insert(chunk.hash, chunk.data.as_slice());
            hashes.extend_from_slice(&chunk.hash);
        }
        // The newest `keep` snapshots stay (this one included); older ones go, with the
        // journals of the steps the oldest kept one covers (replay never reaches behind it).
        let keep = (*keep_snapshots).max(1) as usize;
        let older =
            tx.prepare_cached("SELECT seq FROM snapshots WHERE session = $1 AND tool = $2 ORDER BY seq DESC").await?;
        let older: Vec<i64> = tx.query(&older, &[session, &step.tool]).await?.iter().map(|r| r.get(0)).collect();
        let mut kept: Vec<i64> = std::iter::once(step.seq as i64).chain(older.iter().copied()).collect();
        let pruned = kept.split_off(keep.min(kept.len()));
        if !pruned.is_empty() {
            let delete = tx
                .prepare_cached(
                    "DELETE FROM snapshots WHERE session = $1 AND tool = $2 AND seq = ANY($3) RETURNING chunks",
                )
                .await?;
            for row in tx.query(&delete, &[session, &step.tool, &pruned]).await? {
                count_hashes(&mut deltas, row.get(0), -1)?;
            }
            let forget = tx
                .prepare_cached(
                    "UPDATE steps SET journal = NULL WHERE session = $1 AND tool = $2 AND seq <= $3
                     AND journal IS NOT NULL",
                )
                .await?;
            tx.execute(&forget, &[session, &step.tool, kept.last().expect("keep >= 1")]).await?;
        }
        let insert = tx
            .prepare_cached("INSERT INTO snapshots (session, tool, seq, bytes, chunks) VALUES ($1, $2, $3, $4, $5)")
            .await?;
        tx.execute(&insert, &[session, &step.tool, &(step.seq as i64), &(bytes.len() as i64), &hashes]).await?;
    }
    adjust_chunks(tx, &deltas, &new_data).await?;
    let clear = tx.prepare_cached("DELETE FROM pending WHERE session = $1").await?;
    tx.execute(&clear, &[session]).await?;
    let advance = tx.prepare_cached("UPDATE sessions SET last_step = $2 WHERE id = $1").await?;
    tx.execute(&advance, &[session, &(step.seq as i64)]).await?;
    Ok(())
}

async fn delete_session(tx: &Transaction<'_>, id: &str, lease: Option<u64>) -> Result<bool, Failure> {
    match lock_session(tx, id, lease).await {
        Ok(_) => {}
        Err(Failure::Store(StoreError::SessionNotFound(_))) => return Ok(false),
        Err(e) => return Err(e),
    }
    let mut deltas = BTreeMap::new();
    for row in tx.query("DELETE FROM snapshots WHERE session = $1 RETURNING chunks", &[&id]).await? {
        count_hashes(&mut deltas, row.get(0), -1)?;
    }
    count_file_refs(tx, &mut deltas, id, -1).await?;
    adjust_chunks(tx, &deltas, &BTreeMap::new()).await?;
    for table in ["state", "steps", "pending", "runs"] {
        tx.execute(&format!("DELETE FROM {table} WHERE session = $1"), &[&id]).await?;
    }
    tx.execute("DELETE FROM sessions WHERE id = $1", &[&id]).await?;
    Ok(true)
}

async fn fork_session(tx: &Transaction<'_>, parent: &str, at: i64, child: &SessionRecord) -> Result<(), Failure> {
    let last: i64 = tx
        .query_opt("SELECT last_step FROM sessions WHERE id = $1 FOR SHARE", &[&parent])
        .await?
        .ok_or_else(|| StoreError::SessionNotFound(parent.to_owned()))?
        .get(0);
    if at > last {
        return Err(StoreError::StepNotFound { session: parent.to_owned(), step: at as u64 }.into());
    }
    // A step whose journal was pruned can only be rebuilt from a snapshot at or after it.
    let unreplayable = tx
        .query_opt(
            "SELECT st.seq FROM steps st WHERE st.session = $1 AND st.seq <= $2 AND st.journal IS NULL
                     AND NOT EXISTS (SELECT 1 FROM snapshots sn WHERE sn.session = $1 AND sn.tool = st.tool
                                     AND sn.seq >= st.seq AND sn.seq <= $2) LIMIT 1",
            &[&parent, &at],
        )
        .await?;
    if let Some(row) = unreplayable {
        let seq: i64 = row.get(0);
        return Err(StoreError::backend_refused(format!(
            "cannot fork `{parent}` at step {at}: the history of step {seq} was pruned; fork at a later step"
        ))
        .into());
    }
    let inserted = tx
        .execute(
            "INSERT INTO sessions (id, seed, forked_from, forked_at, created_at_ms, last_step)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            &[&child.id, &&child.seed[..], &parent, &at, &child.created_at_ms, &at],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::SessionExists(child.id.clone()).into());
    }
    tx.execute(
        "INSERT INTO steps (session, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files)
                 SELECT $1, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files
                 FROM steps WHERE session = $2 AND seq <= $3",
        &[&child.id, &parent, &at],
    )
    .await?;
    let mut deltas = BTreeMap::new();
    // The child's steps name the parent's file chunks: shared, one more reference each.
    count_file_refs(tx, &mut deltas, &child.id, 1).await?;
    let copied = tx
        .query(
            "INSERT INTO snapshots (session, tool, seq, bytes, chunks)
                     SELECT $1, tool, seq, bytes, chunks FROM snapshots WHERE session = $2 AND seq <= $3
                     RETURNING chunks",
            &[&child.id, &parent, &at],
        )
        .await?;
    for row in copied {
        count_hashes(&mut deltas, row.get(0), 1)?;
    }
    adjust_chunks(tx, &deltas, &BTreeMap::new()).await?;
    // State as of step `at`: the writes of steps 1..=at, in order.
    let rows = tx.query("SELECT tool, writes FROM steps WHERE session = $1 ORDER BY seq", &[&child.id]).await?;
    for row in rows {
        let tool: String = row.get(0);
        let writes: Vec<StateWrite> = decode(row.get(1), "step writes")?;
        apply_writes(tx, &child.id, &tool, &writes).await?;
    }
    Ok(())
}

async fn put_pending(tx: &Transaction<'_>, session: &str, lease: Option<u64>, record: &[u8]) -> Result<(), Failure> {
    lock_session(tx, session, lease).await?;
    let put = tx
        .prepare_cached(
            "INSERT INTO pending (session, record) VALUES ($1, $2)
             ON CONFLICT (session) DO UPDATE SET record = excluded.record",
        )
        .await?;
    tx.execute(&put, &[&session, &record]).await?;
    Ok(())
}

async fn clear_pending(tx: &Transaction<'_>, session: &str, lease: Option<u64>) -> Result<(), Failure> {
    lock_session(tx, session, lease).await?;
    tx.execute("DELETE FROM pending WHERE session = $1", &[&session]).await?;
    Ok(())
}

async fn acquire_lease(tx: &Transaction<'_>, session: &str, holder: &str, ttl: i64) -> Result<Lease, Failure> {
    let row = tx
        .query_opt(
            &format!("SELECT lease_holder, lease_expires_ms, {NOW_MS} FROM sessions WHERE id = $1 FOR UPDATE"),
            &[&session],
        )
        .await?
        .ok_or_else(|| StoreError::SessionNotFound(session.to_owned()))?;
    let (current, expires_at_ms, now): (Option<String>, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if let Some(current) = current.filter(|c| c != holder && expires_at_ms > now) {
        return Err(StoreError::LeaseHeld {
            session: session.to_owned(),
            holder: current,
            expires_in_ms: (expires_at_ms - now) as u64,
        }
        .into());
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE sessions SET lease_holder = $2, lease_token = lease_token + 1,
                         lease_expires_ms = {NOW_MS} + $3 WHERE id = $1 RETURNING lease_token, lease_expires_ms"
            ),
            &[&session, &holder, &ttl],
        )
        .await?;
    Ok(Lease {
        session: session.to_owned(),
        holder: holder.to_owned(),
        token: row.get::<_, i64>(0) as u64,
        expires_at_ms: row.get(1),
    })
}

fn session_row(row: &tokio_postgres::Row) -> SessionRecord {
    let seed: Vec<u8> = row.get(1);
    let forked_from: Option<String> = row.get(2);
    let forked_at: Option<i64> = row.get(3);
    SessionRecord {
        id: row.get(0),
        seed: seed.try_into().unwrap_or([0; 32]),
        forked_from: forked_from.zip(forked_at.map(|s| s as u64)),
        created_at_ms: row.get(4),
        last_step: row.get::<_, i64>(5) as u64,
    }
}

const SESSION_COLUMNS: &str = "id, seed, forked_from, forked_at, created_at_ms, last_step";

#[async_trait]
impl Store for PostgresStore {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO sessions (id, seed, forked_from, forked_at, created_at_ms, last_step)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &s.id,
                    &&s.seed[..],
                    &s.forked_from.as_ref().map(|f| f.0.as_str()),
                    &s.forked_from.as_ref().map(|f| f.1 as i64),
                    &s.created_at_ms,
                    &(s.last_step as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        if inserted == 0 { Err(StoreError::SessionExists(s.id.clone())) } else { Ok(()) }
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
            .await
            .map_err(pg_error)?;
        Ok(client.query_opt(&stmt, &[&id]).await.map_err(pg_error)?.as_ref().map(session_row))
    }

    async fn list_sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY created_at_ms, id"), &[])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(session_row)
            .map(|s| SessionSummary {
                id: s.id,
                steps: s.last_step,
                created_at_ms: s.created_at_ms,
                forked_from: s.forked_from,
            })
            .collect())
    }

    async fn delete_session(&self, id: &str, lease: Option<u64>) -> Result<bool, StoreError> {
        transact!(self, |tx| delete_session(tx, id, lease))
    }

    async fn fork_session(&self, parent: &str, at: u64, child: &SessionRecord) -> Result<(), StoreError> {
        transact!(self, |tx| fork_session(tx, parent, at as i64, child))
    }

    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT value FROM state WHERE session = $1 AND tool = $2 AND namespace = $3 AND key = $4")
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&scope.session, &scope.tool, &namespace, &key]).await.map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        // `starts_with` keeps LIKE's wildcards out; `key >= prefix` lets the scan use the key.
        let stmt = client
            .prepare_cached(
                "SELECT key FROM state WHERE session = $1 AND tool = $2 AND namespace = $3 AND key >= $4
                 AND starts_with(key, $4) ORDER BY key",
            )
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[&scope.session, &scope.tool, &namespace, &prefix]).await.map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(octet_length(key) + octet_length(value)), 0)::bigint FROM state
                 WHERE session = $1 AND tool = $2",
                &[&scope.session, &scope.tool],
            )
            .await
            .map_err(pg_error)?;
        Ok(StateUsage { keys: row.get::<_, i64>(0) as u64, bytes: row.get::<_, i64>(1) as u64 })
    }

    async fn state_keys(&self, session: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tool, namespace, key FROM state WHERE session = $1 ORDER BY tool, namespace, key",
                &[&session],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn commit_step(&self, commit: StepCommit) -> Result<(), StoreError> {
        transact!(self, |tx| commit_step(tx, &commit))
    }

    async fn steps(&self, session: &str, tool: Option<&str>, after: u64) -> Result<Vec<StepRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files FROM steps
                 WHERE session = $1 AND seq > $2 AND ($3::text IS NULL OR tool = $3) ORDER BY seq",
            )
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[&session, &(after as i64), &tool]).await.map_err(pg_error)?;
        rows.iter().map(step_from_row).collect()
    }

    async fn last_step_of(&self, session: &str, tool: &str, at: u64) -> Result<Option<StepRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files FROM steps
                 WHERE session = $1 AND tool = $2 AND seq <= $3 ORDER BY seq DESC LIMIT 1",
            )
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&session, &tool, &(at as i64)]).await.map_err(pg_error)?;
        row.as_ref().map(step_from_row).transpose()
    }

    async fn workspace_at(&self, session: &str, tool: &str, at: u64) -> Result<Manifest, StoreError> {
        let client = self.client().await?;
        // Only the file changes, of the steps that have any.
        let stmt = client
            .prepare_cached(
                "SELECT seq, files FROM steps WHERE session = $1 AND tool = $2 AND seq <= $3
                 AND files IS NOT NULL ORDER BY seq",
            )
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[&session, &tool, &(at as i64)]).await.map_err(pg_error)?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(pg_error)?;
            let blob: Vec<u8> = row.try_get(1).map_err(pg_error)?;
            changes.push((seq as u64, decode::<Vec<FileChange>>(&blob, "step files")?));
        }
        Ok(manifest_at(changes.iter().map(|(seq, files)| (*seq, files.as_slice())), at))
    }

    async fn latest_snapshot(&self, session: &str, tool: &str, at: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT seq, bytes, chunks FROM snapshots WHERE session = $1 AND tool = $2 AND seq <= $3
                 ORDER BY seq DESC LIMIT 1",
                &[&session, &tool, &(at as i64)],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = found else { return Ok(None) };
        let (seq, size, hashes): (i64, i64, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let wanted: Vec<&[u8]> = hashes.chunks(32).collect();
        let rows =
            client.query("SELECT hash, data FROM chunks WHERE hash = ANY($1)", &[&wanted]).await.map_err(pg_error)?;
        let data: std::collections::HashMap<&[u8], &[u8]> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut bytes = Vec::with_capacity(size as usize);
        for hash in &wanted {
            let chunk = data
                .get(hash)
                .ok_or_else(|| StoreError::corrupt(format!("snapshot of `{tool}` at step {seq} misses a chunk")))?;
            bytes.extend_from_slice(chunk);
        }
        if bytes.len() as i64 != size {
            return Err(StoreError::corrupt(format!("snapshot of `{tool}` at step {seq} has the wrong size")));
        }
        Ok(Some((seq as u64, bytes)))
    }

    async fn chunks(&self, hashes: &[[u8; 32]]) -> Result<Vec<Vec<u8>>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let wanted: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let rows =
            client.query("SELECT hash, data FROM chunks WHERE hash = ANY($1)", &[&wanted]).await.map_err(pg_error)?;
        let data: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        wanted
            .iter()
            .map(|hash| data.get(*hash).cloned().ok_or_else(|| StoreError::corrupt("a workspace file misses a chunk")))
            .collect()
    }

    async fn snapshots(&self, session: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tool, seq, bytes, octet_length(chunks) / 32 FROM snapshots WHERE session = $1
                 ORDER BY seq, tool",
                &[&session],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| SnapshotInfo {
                tool: r.get(0),
                seq: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
                chunks: r.get::<_, i32>(3) as u64,
            })
            .collect())
    }

    async fn storage_stats(&self, session: &str) -> Result<StorageStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                   (SELECT COALESCE(SUM(octet_length(input) + octet_length(outcome)
                      + COALESCE(octet_length(journal), 0) + octet_length(writes) + octet_length(random)
                      + COALESCE(octet_length(files), 0)), 0)::bigint
                    FROM steps WHERE session = $1),
                   (SELECT COALESCE(SUM(bytes), 0)::bigint FROM snapshots WHERE session = $1),
                   (SELECT COALESCE(SUM(octet_length(data)), 0)::bigint FROM chunks)",
                &[&session],
            )
            .await
            .map_err(pg_error)?;
        Ok(StorageStats {
            step_bytes: row.get::<_, i64>(0) as u64,
            snapshot_bytes: row.get::<_, i64>(1) as u64,
            chunk_bytes: row.get::<_, i64>(2) as u64,
        })
    }

    async fn put_pending(&self, session: &str, pending: &PendingStep) -> Result<(), StoreError> {
        let record = encode(pending)?;
        transact!(self, |tx| put_pending(tx, session, pending.lease, &record))
    }

    async fn pending(&self, session: &str) -> Result<Option<PendingStep>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT record FROM pending WHERE session = $1").await.map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&session]).await.map_err(pg_error)?;
        row.map(|r| decode(r.get(0), "pending step")).transpose()
    }

    async fn clear_pending(&self, session: &str, lease: Option<u64>) -> Result<(), StoreError> {
        transact!(self, |tx| clear_pending(tx, session, lease))
    }

    async fn acquire_lease(&self, session: &str, holder: &str, ttl: Duration) -> Result<Lease, StoreError> {
        transact!(self, |tx| acquire_lease(tx, session, holder, ttl_ms(ttl)))
    }

    async fn renew_lease(&self, session: &str, token: u64, ttl: Duration) -> Result<Lease, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE sessions SET lease_expires_ms = {NOW_MS} + $3
                 WHERE id = $1 AND lease_token = $2 AND lease_holder IS NOT NULL
                 RETURNING lease_holder, lease_expires_ms"
            ))
            .await
            .map_err(pg_error)?;
        let renewed = client.query_opt(&stmt, &[&session, &(token as i64), &ttl_ms(ttl)]).await.map_err(pg_error)?;
        match renewed {
            Some(row) => {
                Ok(Lease { session: session.to_owned(), holder: row.get(0), token, expires_at_ms: row.get(1) })
            }
            None => {
                let reason = match self.lease(session).await? {
                    Some(current) => format!("`{}` holds it with token {}", current.holder, current.token),
                    None => "the lease was released".to_owned(),
                };
                Err(StoreError::LeaseLost { session: session.to_owned(), token, reason })
            }
        }
    }

    async fn release_lease(&self, session: &str, token: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sessions SET lease_holder = NULL, lease_expires_ms = 0 WHERE id = $1 AND lease_token = $2",
                &[&session, &(token as i64)],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn lease(&self, session: &str) -> Result<Option<Lease>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT lease_holder, lease_token, lease_expires_ms FROM sessions WHERE id = $1", &[&session])
            .await
            .map_err(pg_error)?
            .ok_or_else(|| StoreError::SessionNotFound(session.to_owned()))?;
        let holder: Option<String> = row.get(0);
        Ok(holder.map(|holder| Lease {
            session: session.to_owned(),
            holder,
            token: row.get::<_, i64>(1) as u64,
            expires_at_ms: row.get(2),
        }))
    }

    async fn record_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO audit (at_ms, session, tool, capability, request, allowed, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&e.at_ms, &e.session, &e.tool, &e.capability, &e.request, &e.allowed, &e.reason],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn audit_events(&self, session: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at_ms, session, tool, capability, request, allowed, reason FROM audit
                 WHERE $1::text IS NULL OR session = $1 ORDER BY id",
                &[&session],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| AuditEvent {
                at_ms: r.get(0),
                session: r.get(1),
                tool: r.get(2),
                capability: r.get(3),
                request: r.get(4),
                allowed: r.get(5),
                reason: r.get(6),
            })
            .collect())
    }

    async fn ended_sessions(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT s.id FROM sessions s
                     LEFT JOIN steps st ON st.session = s.id AND st.seq = s.last_step
                     WHERE (s.lease_holder IS NULL OR s.lease_expires_ms <= {NOW_MS})
                       AND COALESCE(st.committed_at_ms, s.created_at_ms) < $1
                     ORDER BY COALESCE(st.committed_at_ms, s.created_at_ms), s.id LIMIT $2"
                ),
                &[&before_ms, &limit],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn delete_audit(&self, scope: AuditScope<'_>, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let deleted = match scope {
            AuditScope::Session(id) => {
                client.execute("DELETE FROM audit WHERE session = $1 AND at_ms < $2", &[&id, &before_ms]).await
            }
            AuditScope::DeletedSessions => {
                client
                    .execute(
                        "DELETE FROM audit WHERE at_ms < $1
                         AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = audit.session)",
                        &[&before_ms],
                    )
                    .await
            }
        };
        deleted.map_err(pg_error)
    }

    // ---- Agent runs (implemented below) ----

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = RunRecord { version: 1, ..run.clone() };
        transact!(self, |tx| create_run(tx, &run))
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE session = $1"), &[&id])
            .await
            .map_err(pg_error)?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError> {
        let client = self.client().await?;
        let status = status.map(RunStatus::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE $1::text IS NULL OR status = $1 ORDER BY created_at_ms, session"
                ),
                &[&status],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn update_run(&self, run: &RunRecord, lease: Option<u64>) -> Result<(), StoreError> {
        transact!(self, |tx| update_run(tx, run, lease))
    }

    async fn claim_runs(
        &self,
        agents: &[String],
        holder: &str,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        transact!(self, |tx| claim_runs(tx, agents, holder, ttl_ms(ttl), limit as i64))
    }

    async fn next_ready_at(&self, agents: &[String]) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT MIN(CASE WHEN s.lease_holder IS NOT NULL AND s.lease_expires_ms > r.ready_at_ms
                                 THEN s.lease_expires_ms ELSE r.ready_at_ms END)
                 FROM runs r JOIN sessions s ON s.id = r.session WHERE r.agent = ANY($1)",
                &[&agents],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    async fn wait_for_runs(&self, timeout: Duration) {
        match self.run_listener().await {
            Ok(listener) => {
                let _ = tokio::time::timeout(timeout, listener.changed.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %crate::source::chain(&e), "cannot listen for run changes; polling instead");
                tokio::time::sleep(timeout).await;
            }
        }
    }

    // ---- Tasks ----

    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO tasks
                     (id, version, created_at_ms, updated_at_ms, session, expires_at_ms, body, claimed_until_ms)
                 VALUES ($1, 1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                &[
                    &task.id,
                    &task.created_at_ms,
                    &task.updated_at_ms,
                    &task.session,
                    &task.expires_at_ms,
                    &task.body,
                    &task.claimed_until_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        if inserted == 0 { Err(StoreError::TaskExists(task.id.clone())) } else { Ok(()) }
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, version, created_at_ms, updated_at_ms, session, expires_at_ms, body, claimed_until_ms
                 FROM tasks WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| TaskRecord {
            id: r.get(0),
            version: r.get::<_, i64>(1) as u64,
            created_at_ms: r.get(2),
            updated_at_ms: r.get(3),
            session: r.get(4),
            expires_at_ms: r.get(5),
            body: r.get(6),
            claimed_until_ms: r.get(7),
        }))
    }

    async fn update_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        // One statement: the version check and the write are atomic without a transaction.
        let updated = client
            .execute(
                "UPDATE tasks SET version = $2::bigint, updated_at_ms = $3, session = $4, expires_at_ms = $5, body = $6,
                     claimed_until_ms = $7
                 WHERE id = $1 AND version = $2::bigint - 1",
                &[
                    &task.id,
                    &(task.version as i64),
                    &task.updated_at_ms,
                    &task.session,
                    &task.expires_at_ms,
                    &task.body,
                    &task.claimed_until_ms,
                ],
            )
            .await
            .map_err(pg_error)?;
        if updated == 1 {
            return Ok(());
        }
        let found = client
            .query_opt("SELECT version FROM tasks WHERE id = $1", &[&task.id])
            .await
            .map_err(pg_error)?
            .map(|r| r.get::<_, i64>(0) as u64);
        check_task_version(task, found)?;
        // Changed between the two statements: still a conflict.
        Err(StoreError::TaskConflict { task: task.id.clone(), expected: task.version - 1, found: found.unwrap_or(0) })
    }

    async fn delete_tasks(&self, scope: TaskScope<'_>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        match scope {
            TaskScope::ExpiredBy(now) => client.execute("DELETE FROM tasks WHERE expires_at_ms <= $1", &[&now]).await,
            TaskScope::Session(s) => client.execute("DELETE FROM tasks WHERE session = $1", &[&s]).await,
        }
        .map_err(pg_error)
    }

    async fn orphaned_tasks(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM tasks WHERE claimed_until_ms <= $1 ORDER BY claimed_until_ms, id LIMIT $2",
                &[&now_ms, &(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

// ---- Agent runs ----

const RUN_COLUMNS: &str = "session, agent, status, ready_at_ms, version, created_at_ms, updated_at_ms, body";
/// The channel run changes are announced on, so waiting workers wake without polling.
const RUNS_CHANNEL: &str = "toolhost_runs";

fn run_from_row(r: &tokio_postgres::Row) -> Result<RunRecord, StoreError> {
    let id: String = r.get(0);
    let status: String = r.get(2);
    Ok(RunRecord {
        status: status.parse().map_err(|e| StoreError::corrupt(format!("run `{id}`: {e}")))?,
        id,
        agent: r.get(1),
        ready_at_ms: r.get(3),
        version: r.get::<_, i64>(4) as u64,
        created_at_ms: r.get(5),
        updated_at_ms: r.get(6),
        body: r.get(7),
    })
}

async fn write_run(tx: &Transaction<'_>, run: &RunRecord) -> Result<(), Failure> {
    tx.execute(
        &format!(
            "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (session) DO UPDATE SET agent = excluded.agent, status = excluded.status,
                 ready_at_ms = excluded.ready_at_ms, version = excluded.version,
                 updated_at_ms = excluded.updated_at_ms, body = excluded.body"
        ),
        &[
            &run.id,
            &run.agent,
            &run.status.as_str(),
            &run.ready_at_ms,
            &(run.version as i64),
            &run.created_at_ms,
            &run.updated_at_ms,
            &run.body,
        ],
    )
    .await?;
    // Delivered at commit, to every listening worker.
    tx.execute("SELECT pg_notify($1, '')", &[&RUNS_CHANNEL]).await?;
    Ok(())
}

async fn create_run(tx: &Transaction<'_>, run: &RunRecord) -> Result<(), Failure> {
    tx.query_opt("SELECT 1 FROM sessions WHERE id = $1 FOR SHARE", &[&run.id])
        .await?
        .ok_or_else(|| StoreError::SessionNotFound(run.id.clone()))?;
    if tx.query_opt("SELECT 1 FROM runs WHERE session = $1", &[&run.id]).await?.is_some() {
        return Err(StoreError::RunExists(run.id.clone()).into());
    }
    write_run(tx, run).await
}

async fn update_run(tx: &Transaction<'_>, run: &RunRecord, lease: Option<u64>) -> Result<(), Failure> {
    if lease.is_some() {
        lock_session(tx, &run.id, lease).await?;
    }
    let found = tx.query_opt("SELECT version FROM runs WHERE session = $1 FOR UPDATE", &[&run.id]).await?;
    check_version(run, found.map(|r| r.get::<_, i64>(0) as u64))?;
    write_run(tx, run).await
}

/// Locks the ready, unleased sessions with `SKIP LOCKED` (rows another claimer is taking are
/// passed over, not waited for) and leases them in the same statement; due waits first (see
/// [`Store::claim_runs`]).
async fn claim_runs(
    tx: &Transaction<'_>,
    agents: &[String],
    holder: &str,
    ttl: i64,
    limit: i64,
) -> Result<Vec<Lease>, Failure> {
    let rows = tx
        .query(
            &format!(
                "WITH ready AS (
                     SELECT s.id FROM runs r JOIN sessions s ON s.id = r.session
                     WHERE r.ready_at_ms <= {NOW_MS} AND r.agent = ANY($1)
                       AND (s.lease_holder IS NULL OR s.lease_expires_ms <= {NOW_MS})
                     ORDER BY {DUE_WAITS_FIRST}, r.ready_at_ms LIMIT $2
                     FOR UPDATE OF s SKIP LOCKED)
                 UPDATE sessions SET lease_holder = $3, lease_token = lease_token + 1,
                     lease_expires_ms = {NOW_MS} + $4
                 FROM ready WHERE sessions.id = ready.id
                 RETURNING sessions.id, lease_token, lease_expires_ms"
            ),
            &[&agents, &limit, &holder, &ttl],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Lease {
            session: r.get(0),
            holder: holder.to_owned(),
            token: r.get::<_, i64>(1) as u64,
            expires_at_ms: r.get(2),
        })
        .collect())
}

impl PostgresStore {
    /// The live listening connection, (re)connected if there is none.
    async fn run_listener(&self) -> Result<std::sync::Arc<RunListener>, StoreError> {
        let mut slot = self.listener.lock().await;
        if let Some(listener) = slot.as_ref().filter(|l| l.alive()) {
            return Ok(listener.clone());
        }
        let listener = std::sync::Arc::new(RunListener::start(&self.config).await?);
        *slot = Some(listener.clone());
        Ok(listener)
    }
}

/// A connection that `LISTEN`s on [`RUNS_CHANNEL`] and wakes waiting workers.
struct RunListener {
    changed: std::sync::Arc<tokio::sync::Notify>,
    /// Kept so the connection stays open.
    _client: tokio_postgres::Client,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RunListener {
    async fn start(config: &tokio_postgres::Config) -> Result<Self, StoreError> {
        use futures_util::StreamExt;
        let (client, mut connection) = config.connect(NoTls).await.map_err(pg_error)?;
        let changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (wake, gone) = (changed.clone(), closed.clone());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(_) = message {
                    wake.notify_waiters();
                    // A worker between two waits finds the permit on its next one.
                    wake.notify_one();
                }
            }
            gone.store(true, std::sync::atomic::Ordering::Relaxed);
            wake.notify_waiters();
        });
        client.batch_execute(&format!("LISTEN {RUNS_CHANNEL}")).await.map_err(pg_error)?;
        Ok(Self { changed, _client: client, closed })
    }

    fn alive(&self) -> bool {
        !self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A step as `SELECT seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files`
/// reads it.
fn step_from_row(r: &tokio_postgres::Row) -> Result<StepRecord, StoreError> {
    let journal: Option<&[u8]> = r.get(5);
    let files: Option<&[u8]> = r.get(9);
    Ok(StepRecord {
        seq: r.get::<_, i64>(0) as u64,
        tool: r.get(1),
        digest: r.get(2),
        input: r.get(3),
        outcome: decode(r.get(4), "step outcome")?,
        journal: journal.map(decode_journal).transpose()?.unwrap_or_default(),
        writes: decode(r.get(6), "step writes")?,
        random: decode_random(r.get(7))?,
        committed_at_ms: r.get(8),
        files: files.map(|f| decode(f, "step files")).transpose()?.unwrap_or_default(),
    })
}
