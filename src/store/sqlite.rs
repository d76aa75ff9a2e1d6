//! The embedded store: SQLite in WAL mode.
//!
//! Writes go through one writer thread that commits in groups: every write queued while the
//! previous transaction was syncing joins the next one, each in its own savepoint, so many
//! sessions share one fsync without sharing failures. Callers are answered only after the
//! group's COMMIT, so an acknowledged step is durable. Reads use a small pool of read-only
//! connections on blocking threads; WAL lets them run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::lease::LeaseRow;
use super::runs::{DUE_WAITS_FIRST, check_version};
use super::{
    AuditEvent, AuditScope, Lease, PendingStep, SessionRecord, SessionSummary, SnapshotInfo, StateScope, StateUsage,
    StepCommit, StepRecord, StorageStats, Store, StoreError, chunk_snapshot,
};
use super::{RunRecord, RunStatus};
use super::{TaskRecord, TaskScope, tasks::check_task_version};
use crate::contract::workspace::{FileChange, Manifest, manifest_at};

/// How hard a commit tries to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit (SQLite `synchronous=FULL`): survives power loss.
    #[default]
    Full,
    /// Survives a process crash, may lose the last commits on power loss (`NORMAL`).
    Normal,
}

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        seed BLOB NOT NULL,
        forked_from TEXT,
        forked_at INTEGER,
        created_at_ms INTEGER NOT NULL,
        last_step INTEGER NOT NULL
    );
    CREATE TABLE state (
        session TEXT NOT NULL,
        tool TEXT NOT NULL,
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (session, tool, namespace, key)
    ) WITHOUT ROWID;
    CREATE TABLE steps (
        session TEXT NOT NULL,
        seq INTEGER NOT NULL,
        tool TEXT NOT NULL,
        digest TEXT NOT NULL,
        input TEXT NOT NULL,
        outcome BLOB NOT NULL,
        journal BLOB,
        writes BLOB NOT NULL,
        random BLOB NOT NULL,
        committed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (session, seq)
    ) WITHOUT ROWID;
    CREATE INDEX steps_by_tool ON steps (session, tool, seq);
    CREATE TABLE snapshots (
        session TEXT NOT NULL,
        tool TEXT NOT NULL,
        seq INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        chunks BLOB NOT NULL,
        PRIMARY KEY (session, tool, seq)
    ) WITHOUT ROWID;
    CREATE TABLE chunks (
        hash BLOB PRIMARY KEY,
        data BLOB NOT NULL,
        refs INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE pending (
        session TEXT PRIMARY KEY,
        record BLOB NOT NULL
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        session TEXT NOT NULL,
        tool TEXT NOT NULL,
        capability TEXT NOT NULL,
        request TEXT NOT NULL,
        allowed INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX audit_by_session ON audit (session, id);
"#,
    r#"
    ALTER TABLE sessions ADD COLUMN lease_holder TEXT;
    ALTER TABLE sessions ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN lease_expires_ms INTEGER NOT NULL DEFAULT 0;
"#,
    // The step's workspace changes (NULL: none); their chunks live in `chunks`, one
    // reference per step naming them.
    r#"
    ALTER TABLE steps ADD COLUMN files BLOB;
"#,
    // Agent runs (`runs.rs`), one per session that has one.
    r#"
    CREATE TABLE runs (
        session TEXT PRIMARY KEY,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        ready_at_ms INTEGER,
        version INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX runs_ready ON runs (ready_at_ms) WHERE ready_at_ms IS NOT NULL;
"#,
    // Tasks (`tasks.rs`): MCP task handles, independent of sessions.
    r#"
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        session TEXT,
        expires_at_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tasks_session ON tasks (session) WHERE session IS NOT NULL;
    CREATE INDEX tasks_expiry ON tasks (expires_at_ms);
"#,
    // Chunks move to a rowid table. SQLite keeps a WITHOUT ROWID row in its key's b-tree,
    // whose pages hold little payload, so each ~2 KiB chunk spilled into overflow pages:
    // reading a 1 MiB snapshot's 500 chunks took ~5x longer than from a rowid table.
    r#"
    CREATE TABLE chunks_by_rowid (
        hash BLOB PRIMARY KEY,
        data BLOB NOT NULL,
        refs INTEGER NOT NULL
    );
    INSERT INTO chunks_by_rowid (hash, data, refs) SELECT hash, data, refs FROM chunks;
    DROP TABLE chunks;
    ALTER TABLE chunks_by_rowid RENAME TO chunks;
"#,
    // A task's claim in a column, so a server finds the orphans of a dead one.
    r#"
    ALTER TABLE tasks ADD COLUMN claimed_until_ms INTEGER;
    CREATE INDEX tasks_claim ON tasks (claimed_until_ms) WHERE claimed_until_ms IS NOT NULL;
"#,
];

/// Writes that arrive while a group is committing join the next group, up to this many.
const MAX_GROUP: usize = 256;
/// Read connections kept open.
const READ_POOL: usize = 4;

type Job = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

struct WriteRequest {
    job: Job,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// Wakes this process's workers when a run changes (other processes poll).
    runs_changed: tokio::sync::Notify,
    /// Keeps a temporary database's folder alive.
    _temp: Option<tempfile::TempDir>,
}

/// A rusqlite (or other) error from the store's own work, kept as the source.
fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::backend("sqlite", e)
}

use super::{decode_journal, decode_random, decode_record as decode, encode_journal, encode_record as encode};

fn now_ms() -> i64 {
    super::timestamp_ms()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref().to_owned(), durability, None)
    }

    /// A database in a temporary folder, deleted when the store is dropped.
    pub fn temporary() -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("creating a temporary folder", e))?;
        Self::open_inner(dir.path().join("toolhost.db"), Durability::Normal, Some(dir))
    }

    fn open_inner(path: PathBuf, durability: Durability, temp: Option<tempfile::TempDir>) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::backend(format!("creating {}", parent.display()), e))?;
        }
        let conn =
            Connection::open(&path).map_err(|e| StoreError::backend(format!("opening {}", path.display()), e))?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(backend)?;
        migrate(&conn)?;
        let (tx, rx) = mpsc::channel::<WriteRequest>();
        let writer_thread = std::thread::Builder::new()
            .name("toolhost-sqlite-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(backend)?;
        Ok(Self {
            path,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(writer_thread)),
            readers: Mutex::new(Vec::new()),
            runs_changed: tokio::sync::Notify::new(),
            _temp: temp,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(
        &self,
        job: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let sender = writer.as_ref().ok_or_else(|| StoreError::backend_refused("the store is closed"))?;
            sender
                .send(WriteRequest { job: Box::new(job), done })
                .map_err(|_| StoreError::backend_refused("the writer thread stopped"))?;
        }
        answer.await.map_err(|_| StoreError::backend_refused("the writer thread stopped"))?
    }

    /// A write that answers with a value.
    async fn write_value<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = std::sync::Arc::new(Mutex::new(None));
        let filled = slot.clone();
        self.write(move |conn| {
            *filled.lock().unwrap_or_else(|p| p.into_inner()) = Some(job(conn)?);
            Ok(())
        })
        .await?;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| StoreError::backend_refused("the writer answered without a value"))
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let flags =
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(backend)?;
                conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(backend)?;
                conn
            }
        };
        let (result, conn) = tokio::task::spawn_blocking(move || {
            let result = query(&conn);
            (result, conn)
        })
        .await
        .map_err(backend)?;
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < READ_POOL {
            readers.push(conn);
        }
        result
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued work and exit.
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)").map_err(backend)?;
    let current: i64 =
        conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0)).map_err(backend)?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::corrupt(format!(
            "the database has schema version {current}; this toolhost knows up to {}",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.unchecked_transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(|e| StoreError::backend(format!("migration {}", index + 1), e))?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [index as i64 + 1]).map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

/// Group commit: one transaction per batch of queued writes, one savepoint per write.
fn write_loop(conn: Connection, requests: mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = StoreError::backend("beginning a write transaction", e);
            for request in group {
                let _ = request.done.send(Err(error.clone()));
            }
            continue;
        }
        let mut results = Vec::with_capacity(group.len());
        let mut senders = Vec::with_capacity(group.len());
        for request in group {
            let result = (|| {
                conn.execute_batch("SAVEPOINT write").map_err(backend)?;
                match (request.job)(&conn) {
                    Ok(()) => conn.execute_batch("RELEASE write").map_err(backend),
                    Err(e) => {
                        conn.execute_batch("ROLLBACK TO write; RELEASE write").map_err(backend)?;
                        Err(e)
                    }
                }
            })();
            results.push(result);
            senders.push(request.done);
        }
        let committed = conn.execute_batch("COMMIT").map_err(backend);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for (result, done) in results.into_iter().zip(senders) {
            let answer = match (&committed, result) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), result) => result,
            };
            let _ = done.send(answer);
        }
    }
}

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let seed: Vec<u8> = row.get(1)?;
    let forked_from: Option<String> = row.get(2)?;
    let forked_at: Option<i64> = row.get(3)?;
    Ok(SessionRecord {
        id: row.get(0)?,
        seed: seed.try_into().unwrap_or([0; 32]),
        forked_from: forked_from.zip(forked_at.map(|s| s as u64)),
        created_at_ms: row.get(4)?,
        last_step: row.get::<_, i64>(5)? as u64,
    })
}

fn last_step(conn: &Connection, session: &str) -> Result<Option<u64>, StoreError> {
    conn.query_row("SELECT last_step FROM sessions WHERE id = ?1", [session], |r| r.get::<_, i64>(0))
        .optional()
        .map(|s| s.map(|s| s as u64))
        .map_err(backend)
}

/// Checks, inside the write's transaction, that a write under `lease` may touch `session`.
fn check_lease(conn: &Connection, session: &str, lease: Option<u64>) -> Result<(), StoreError> {
    let row: Option<(Option<String>, i64, i64)> = conn
        .prepare_cached("SELECT lease_holder, lease_token, lease_expires_ms FROM sessions WHERE id = ?1")
        .and_then(|mut s| s.query_row([session], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(backend)?;
    let (holder, token, expires_at_ms) = row.ok_or_else(|| StoreError::SessionNotFound(session.to_owned()))?;
    LeaseRow { holder: holder.as_deref(), token: token as u64, expires_at_ms }.admits(session, lease, now_ms())
}

fn lease_row(conn: &Connection, session: &str) -> Result<Option<Lease>, StoreError> {
    let row: Option<(Option<String>, i64, i64)> = conn
        .query_row("SELECT lease_holder, lease_token, lease_expires_ms FROM sessions WHERE id = ?1", [session], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(backend)?;
    let (holder, token, expires_at_ms) = row.ok_or_else(|| StoreError::SessionNotFound(session.to_owned()))?;
    Ok(holder.map(|holder| Lease { session: session.to_owned(), holder, token: token as u64, expires_at_ms }))
}

fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Adds `delta` references to each chunk `hashes` names (32 bytes each), deleting those left
/// with none. Only the named rows are touched: a commit costs its own chunks, not the store's.
fn add_chunk_refs(conn: &Connection, hashes: &[u8], delta: i64) -> Result<(), StoreError> {
    let mut update = conn.prepare_cached("UPDATE chunks SET refs = refs + ?2 WHERE hash = ?1").map_err(backend)?;
    let mut sweep = conn.prepare_cached("DELETE FROM chunks WHERE hash = ?1 AND refs <= 0").map_err(backend)?;
    for hash in hashes.chunks(32) {
        if update.execute(params![hash, delta]).map_err(backend)? == 0 && delta > 0 {
            return Err(StoreError::corrupt(format!(
                "a reference to chunk {} that the store does not hold",
                hex::encode(hash)
            )));
        }
        if delta < 0 {
            sweep.execute([hash]).map_err(backend)?;
        }
    }
    Ok(())
}

/// Stores `chunks` (once each) and takes one reference per naming in `step`'s file changes.
fn add_file_chunks(conn: &Connection, step: &StepRecord, chunks: &[super::Chunk]) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached("INSERT INTO chunks (hash, data, refs) VALUES (?1, ?2, 0) ON CONFLICT (hash) DO NOTHING")
        .map_err(backend)?;
    for chunk in chunks {
        insert.execute(params![&chunk.hash[..], chunk.data]).map_err(backend)?;
    }
    let hashes: Vec<u8> = step.file_chunk_refs().flatten().copied().collect();
    add_chunk_refs(conn, &hashes, 1)
}

/// Changes by `delta` the references the file changes of `session`'s steps hold.
fn adjust_file_refs(conn: &Connection, session: &str, delta: i64) -> Result<(), StoreError> {
    let blobs: Vec<Vec<u8>> = {
        let mut stmt =
            conn.prepare("SELECT files FROM steps WHERE session = ?1 AND files IS NOT NULL").map_err(backend)?;
        let rows = stmt.query_map([session], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    let mut hashes = Vec::new();
    for blob in blobs {
        let files: Vec<FileChange> = decode(&blob, "step files")?;
        hashes.extend(files.iter().filter_map(|c| c.entry.as_ref()).flat_map(|e| e.chunks()).flatten());
    }
    add_chunk_refs(conn, &hashes, delta)
}

fn delete_snapshot(conn: &Connection, session: &str, tool: &str, seq: u64) -> Result<(), StoreError> {
    let chunks: Vec<u8> = conn
        .query_row(
            "DELETE FROM snapshots WHERE session = ?1 AND tool = ?2 AND seq = ?3 RETURNING chunks",
            params![session, tool, seq as i64],
            |r| r.get(0),
        )
        .map_err(backend)?;
    add_chunk_refs(conn, &chunks, -1)
}

fn apply_writes(conn: &Connection, session: &str, tool: &str, writes: &[super::StateWrite]) -> Result<(), StoreError> {
    for w in writes {
        match &w.value {
            Some(value) => conn.execute(
                "INSERT INTO state (session, tool, namespace, key, value) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (session, tool, namespace, key) DO UPDATE SET value = excluded.value",
                params![session, tool, w.namespace, w.key, value],
            ),
            None => conn.execute(
                "DELETE FROM state WHERE session = ?1 AND tool = ?2 AND namespace = ?3 AND key = ?4",
                params![session, tool, w.namespace, w.key],
            ),
        }
        .map_err(backend)?;
    }
    Ok(())
}

fn commit_step(conn: &Connection, commit: StepCommit) -> Result<(), StoreError> {
    let StepCommit { session, step, snapshot, file_chunks, keep_snapshots, lease } = commit;
    step.check_files()?;
    check_lease(conn, &session, lease)?;
    let found = last_step(conn, &session)?.ok_or_else(|| StoreError::SessionNotFound(session.clone()))?;
    if found + 1 != step.seq {
        return Err(StoreError::Conflict { session, expected: step.seq - 1, found });
    }
    conn.execute(
        "INSERT INTO steps (session, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            session,
            step.seq as i64,
            step.tool,
            step.digest,
            step.input,
            encode(&step.outcome)?,
            encode_journal(&step.journal)?,
            encode(&step.writes)?,
            encode(&step.random)?,
            step.committed_at_ms,
            (!step.files.is_empty()).then(|| encode(&step.files)).transpose()?,
        ],
    )
    .map_err(backend)?;
    apply_writes(conn, &session, &step.tool, &step.writes)?;
    add_file_chunks(conn, &step, &file_chunks)?;
    if let Some(bytes) = snapshot {
        let chunks = chunk_snapshot(&bytes);
        let mut hashes = Vec::with_capacity(chunks.len() * 32);
        for chunk in &chunks {
            conn.execute(
                "INSERT INTO chunks (hash, data, refs) VALUES (?1, ?2, 0) ON CONFLICT (hash) DO NOTHING",
                params![&chunk.hash[..], chunk.data],
            )
            .map_err(backend)?;
            hashes.extend_from_slice(&chunk.hash);
        }
        add_chunk_refs(conn, &hashes, 1)?;
        conn.execute(
            "INSERT INTO snapshots (session, tool, seq, bytes, chunks) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session, step.tool, step.seq as i64, bytes.len() as i64, hashes],
        )
        .map_err(backend)?;
        prune_snapshots(conn, &session, &step.tool, keep_snapshots.max(1))?;
    }
    conn.execute("DELETE FROM pending WHERE session = ?1", [&session]).map_err(backend)?;
    conn.execute("UPDATE sessions SET last_step = ?2 WHERE id = ?1", params![session, step.seq as i64])
        .map_err(backend)?;
    Ok(())
}

/// Keeps the newest `keep` snapshots of a tool; drops older ones and the journals of the
/// steps the oldest kept snapshot covers (replay never reaches behind it).
fn prune_snapshots(conn: &Connection, session: &str, tool: &str, keep: u32) -> Result<(), StoreError> {
    let seqs: Vec<u64> = {
        let mut stmt = conn
            .prepare_cached("SELECT seq FROM snapshots WHERE session = ?1 AND tool = ?2 ORDER BY seq DESC")
            .map_err(backend)?;
        let rows = stmt.query_map(params![session, tool], |r| r.get::<_, i64>(0)).map_err(backend)?;
        rows.map(|r| r.map(|s| s as u64)).collect::<Result<_, _>>().map_err(backend)?
    };
    if seqs.len() <= keep as usize {
        return Ok(());
    }
    for &seq in &seqs[keep as usize..] {
        delete_snapshot(conn, session, tool, seq)?;
    }
    let oldest_kept = seqs[keep as usize - 1];
    conn.execute(
        "UPDATE steps SET journal = NULL WHERE session = ?1 AND tool = ?2 AND seq <= ?3 AND journal IS NOT NULL",
        params![session, tool, oldest_kept as i64],
    )
    .map_err(backend)?;
    Ok(())
}

/// A `steps` row as read, before its encoded columns are decoded.
struct StepRow {
    seq: i64,
    tool: String,
    digest: String,
    input: String,
    outcome: Vec<u8>,
    /// `NULL` once pruned.
    journal: Option<Vec<u8>>,
    writes: Vec<u8>,
    random: Vec<u8>,
    committed_at_ms: i64,
    files: Option<Vec<u8>>,
}

impl StepRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            tool: row.get(1)?,
            digest: row.get(2)?,
            input: row.get(3)?,
            outcome: row.get(4)?,
            journal: row.get(5)?,
            writes: row.get(6)?,
            random: row.get(7)?,
            committed_at_ms: row.get(8)?,
            files: row.get(9)?,
        })
    }

    fn decode(self) -> Result<StepRecord, StoreError> {
        Ok(StepRecord {
            seq: self.seq as u64,
            tool: self.tool,
            digest: self.digest,
            input: self.input,
            outcome: decode(&self.outcome, "step outcome")?,
            journal: match self.journal {
                Some(j) => decode_journal(&j)?,
                None => Vec::new(),
            },
            writes: decode(&self.writes, "step writes")?,
            random: decode_random(&self.random)?,
            committed_at_ms: self.committed_at_ms,
            files: match self.files {
                Some(f) => decode(&f, "step files")?,
                None => Vec::new(),
            },
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let s = session.clone();
        self.write(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT INTO sessions (id, seed, forked_from, forked_at, created_at_ms, last_step)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                    params![
                        s.id,
                        &s.seed[..],
                        s.forked_from.as_ref().map(|f| &f.0),
                        s.forked_from.as_ref().map(|f| f.1 as i64),
                        s.created_at_ms,
                        s.last_step as i64
                    ],
                )
                .map_err(backend)?;
            if inserted == 0 { Err(StoreError::SessionExists(s.id)) } else { Ok(()) }
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT id, seed, forked_from, forked_at, created_at_ms, last_step FROM sessions WHERE id = ?1",
                [id],
                session_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, seed, forked_from, forked_at, created_at_ms, last_step FROM sessions ORDER BY created_at_ms, id")
                .map_err(backend)?;
            let rows = stmt.query_map([], session_row).map_err(backend)?;
            rows.map(|r| {
                r.map(|s| SessionSummary {
                    id: s.id,
                    steps: s.last_step,
                    created_at_ms: s.created_at_ms,
                    forked_from: s.forked_from,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(backend)
        })
        .await
    }

    async fn delete_session(&self, id: &str, lease: Option<u64>) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let existed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = existed.clone();
        self.write(move |conn| {
            if last_step(conn, &id)?.is_none() {
                return Ok(());
            }
            check_lease(conn, &id, lease)?;
            let snapshots: Vec<(String, i64)> = {
                let mut stmt = conn.prepare("SELECT tool, seq FROM snapshots WHERE session = ?1").map_err(backend)?;
                let rows = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)?
            };
            for (tool, seq) in snapshots {
                delete_snapshot(conn, &id, &tool, seq as u64)?;
            }
            adjust_file_refs(conn, &id, -1)?;
            for table in ["state", "steps", "pending", "runs"] {
                conn.execute(&format!("DELETE FROM {table} WHERE session = ?1"), [&id]).map_err(backend)?;
            }
            let deleted = conn.execute("DELETE FROM sessions WHERE id = ?1", [&id]).map_err(backend)?;
            flag.store(deleted > 0, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await?;
        Ok(existed.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn fork_session(&self, parent: &str, at: u64, child: &SessionRecord) -> Result<(), StoreError> {
        let (parent, child) = (parent.to_owned(), child.clone());
        self.write(move |conn| {
            let last = last_step(conn, &parent)?.ok_or_else(|| StoreError::SessionNotFound(parent.clone()))?;
            if at > last {
                return Err(StoreError::StepNotFound { session: parent, step: at });
            }
            // A step whose journal was pruned can only be rebuilt from a snapshot at or after it.
            let unreplayable: Option<i64> = conn
                .query_row(
                    "SELECT st.seq FROM steps st WHERE st.session = ?1 AND st.seq <= ?2 AND st.journal IS NULL
                     AND NOT EXISTS (SELECT 1 FROM snapshots sn WHERE sn.session = ?1 AND sn.tool = st.tool
                                     AND sn.seq >= st.seq AND sn.seq <= ?2) LIMIT 1",
                    params![parent, at as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if let Some(seq) = unreplayable {
                return Err(StoreError::backend_refused(format!(
                    "cannot fork `{parent}` at step {at}: the history of step {seq} was pruned; fork at a later step"
                )));
            }
            conn.execute(
                "INSERT INTO sessions (id, seed, forked_from, forked_at, created_at_ms, last_step) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![child.id, &child.seed[..], parent, at as i64, child.created_at_ms, at as i64],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::SessionExists(child.id.clone())
                }
                e => backend(e),
            })?;
            conn.execute(
                "INSERT INTO steps (session, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files)
                 SELECT ?1, seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files
                 FROM steps WHERE session = ?2 AND seq <= ?3",
                params![child.id, parent, at as i64],
            )
            .map_err(backend)?;
            // The child's steps name the parent's file chunks: shared, one more reference each.
            adjust_file_refs(conn, &child.id, 1)?;
            let snapshots: Vec<(String, i64, i64, Vec<u8>)> = {
                let mut stmt = conn
                    .prepare("SELECT tool, seq, bytes, chunks FROM snapshots WHERE session = ?1 AND seq <= ?2")
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![parent, at as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)?
            };
            for (tool, seq, bytes, chunks) in snapshots {
                conn.execute(
                    "INSERT INTO snapshots (session, tool, seq, bytes, chunks) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![child.id, tool, seq, bytes, chunks],
                )
                .map_err(backend)?;
                add_chunk_refs(conn, &chunks, 1)?;
            }
            // State as of step `at`: the writes of steps 1..=at, in order.
            let writes: Vec<(String, Vec<u8>)> = {
                let mut stmt = conn
                    .prepare("SELECT tool, writes FROM steps WHERE session = ?1 AND seq <= ?2 ORDER BY seq")
                    .map_err(backend)?;
                let rows =
                    stmt.query_map(params![child.id, at as i64], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)?
            };
            for (tool, blob) in writes {
                let writes: Vec<super::StateWrite> = decode(&blob, "step writes")?;
                apply_writes(conn, &child.id, &tool, &writes)?;
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, scope: &StateScope, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (scope, namespace, key) = (scope.clone(), namespace.to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT value FROM state WHERE session = ?1 AND tool = ?2 AND namespace = ?3 AND key = ?4",
            )
            .and_then(|mut s| s.query_row(params![scope.session, scope.tool, namespace, key], |r| r.get(0)).optional())
            .map_err(backend)
        })
        .await
    }

    async fn list_keys(&self, scope: &StateScope, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (scope, namespace, prefix) = (scope.clone(), namespace.to_owned(), prefix.to_owned());
        self.read(move |conn| {
            // Range scan on the primary key; `substr` keeps LIKE's wildcards out of it.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key FROM state WHERE session = ?1 AND tool = ?2 AND namespace = ?3 AND key >= ?4
                     AND substr(key, 1, length(?4)) = ?4 ORDER BY key",
                )
                .map_err(backend)?;
            let rows =
                stmt.query_map(params![scope.session, scope.tool, namespace, prefix], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn usage(&self, scope: &StateScope) -> Result<StateUsage, StoreError> {
        let scope = scope.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM state
                 WHERE session = ?1 AND tool = ?2",
                params![scope.session, scope.tool],
                |r| Ok(StateUsage { keys: r.get::<_, i64>(0)? as u64, bytes: r.get::<_, i64>(1)? as u64 }),
            )
            .map_err(backend)
        })
        .await
    }

    async fn state_keys(&self, session: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let session = session.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT tool, namespace, key FROM state WHERE session = ?1 ORDER BY tool, namespace, key")
                .map_err(backend)?;
            let rows = stmt.query_map([session], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn commit_step(&self, commit: StepCommit) -> Result<(), StoreError> {
        self.write(move |conn| commit_step(conn, commit)).await
    }

    async fn steps(&self, session: &str, tool: Option<&str>, after: u64) -> Result<Vec<StepRecord>, StoreError> {
        let (session, tool) = (session.to_owned(), tool.map(str::to_owned));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files FROM steps
                     WHERE session = ?1 AND seq > ?2 AND (?3 IS NULL OR tool = ?3) ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = stmt.query_map(params![session, after as i64, tool], StepRow::read).map_err(backend)?;
            rows.map(|row| row.map_err(backend)?.decode()).collect()
        })
        .await
    }

    async fn last_step_of(&self, session: &str, tool: &str, at: u64) -> Result<Option<StepRecord>, StoreError> {
        let (session, tool) = (session.to_owned(), tool.to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, tool, digest, input, outcome, journal, writes, random, committed_at_ms, files FROM steps
                     WHERE session = ?1 AND tool = ?2 AND seq <= ?3 ORDER BY seq DESC LIMIT 1",
                )
                .map_err(backend)?;
            let row = stmt.query_row(params![session, tool, at as i64], StepRow::read).optional().map_err(backend)?;
            row.map(StepRow::decode).transpose()
        })
        .await
    }

    async fn workspace_at(&self, session: &str, tool: &str, at: u64) -> Result<Manifest, StoreError> {
        let (session, tool) = (session.to_owned(), tool.to_owned());
        self.read(move |conn| {
            // Only the file changes, of the steps that have any (`steps_by_tool`'s range).
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, files FROM steps WHERE session = ?1 AND tool = ?2 AND seq <= ?3
                     AND files IS NOT NULL ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![session, tool, at as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(backend)?;
            let mut changes = Vec::new();
            for row in rows {
                let (seq, blob) = row.map_err(backend)?;
                changes.push((seq, decode::<Vec<FileChange>>(&blob, "step files")?));
            }
            Ok(manifest_at(changes.iter().map(|(seq, files)| (*seq, files.as_slice())), at))
        })
        .await
    }

    async fn latest_snapshot(&self, session: &str, tool: &str, at: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (session, tool) = (session.to_owned(), tool.to_owned());
        self.read(move |conn| {
            // One read transaction for the row and its chunks: they are read as of one
            // commit (a concurrent prune cannot take a chunk in between), and SQLite does
            // not open and close a transaction per chunk.
            let tx = conn.unchecked_transaction().map_err(backend)?;
            let found: Option<(i64, i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT seq, bytes, chunks FROM snapshots WHERE session = ?1 AND tool = ?2 AND seq <= ?3
                     ORDER BY seq DESC LIMIT 1",
                    params![session, tool, at as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(backend)?;
            let Some((seq, size, hashes)) = found else { return Ok(None) };
            // Bounded by what the chunks can hold, whatever a damaged row says.
            let capacity = usize::try_from(size).unwrap_or(0).min(hashes.len() / 32 * super::chunks::MAX_CHUNK);
            let mut bytes = Vec::with_capacity(capacity);
            let mut stmt = tx.prepare_cached("SELECT data FROM chunks WHERE hash = ?1").map_err(backend)?;
            for hash in hashes.chunks(32) {
                // Copied from SQLite's row straight into the snapshot: no buffer per chunk.
                let found = stmt
                    .query_row([hash], |r| {
                        bytes.extend_from_slice(r.get_ref(0)?.as_blob()?);
                        Ok(())
                    })
                    .optional()
                    .map_err(backend)?;
                found
                    .ok_or_else(|| StoreError::corrupt(format!("snapshot of `{tool}` at step {seq} misses a chunk")))?;
            }
            if bytes.len() as i64 != size {
                return Err(StoreError::corrupt(format!("snapshot of `{tool}` at step {seq} has the wrong size")));
            }
            Ok(Some((seq as u64, bytes)))
        })
        .await
    }

    async fn chunks(&self, hashes: &[[u8; 32]]) -> Result<Vec<Vec<u8>>, StoreError> {
        let hashes = hashes.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT data FROM chunks WHERE hash = ?1").map_err(backend)?;
            hashes
                .iter()
                .map(|hash| {
                    stmt.query_row([&hash[..]], |r| r.get(0))
                        .optional()
                        .map_err(backend)?
                        .ok_or_else(|| StoreError::corrupt("a workspace file misses a chunk"))
                })
                .collect()
        })
        .await
    }

    async fn snapshots(&self, session: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        let session = session.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT tool, seq, bytes, length(chunks) / 32 FROM snapshots WHERE session = ?1 ORDER BY seq, tool",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([session], |r| {
                    Ok(SnapshotInfo {
                        tool: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                        chunks: r.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn storage_stats(&self, session: &str) -> Result<StorageStats, StoreError> {
        let session = session.to_owned();
        self.read(move |conn| {
            let step_bytes: i64 = conn
                .query_row(
                    "SELECT COALESCE(SUM(length(CAST(input AS BLOB)) + length(outcome) + COALESCE(length(journal), 0)
                     + length(writes) + length(random) + COALESCE(length(files), 0)), 0) FROM steps WHERE session = ?1",
                    [&session],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let snapshot_bytes: i64 = conn
                .query_row("SELECT COALESCE(SUM(bytes), 0) FROM snapshots WHERE session = ?1", [&session], |r| r.get(0))
                .map_err(backend)?;
            let chunk_bytes: i64 = conn
                .query_row("SELECT COALESCE(SUM(length(data)), 0) FROM chunks", [], |r| r.get(0))
                .map_err(backend)?;
            Ok(StorageStats {
                step_bytes: step_bytes as u64,
                snapshot_bytes: snapshot_bytes as u64,
                chunk_bytes: chunk_bytes as u64,
            })
        })
        .await
    }

    async fn put_pending(&self, session: &str, pending: &PendingStep) -> Result<(), StoreError> {
        let (session, record, lease) = (session.to_owned(), encode(pending)?, pending.lease);
        self.write(move |conn| {
            check_lease(conn, &session, lease)?;
            conn.execute(
                "INSERT INTO pending (session, record) VALUES (?1, ?2)
                 ON CONFLICT (session) DO UPDATE SET record = excluded.record",
                params![session, record],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn pending(&self, session: &str) -> Result<Option<PendingStep>, StoreError> {
        let session = session.to_owned();
        self.read(move |conn| {
            let blob: Option<Vec<u8>> = conn
                .query_row("SELECT record FROM pending WHERE session = ?1", [session], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            blob.map(|b| decode(&b, "pending step")).transpose()
        })
        .await
    }

    async fn clear_pending(&self, session: &str, lease: Option<u64>) -> Result<(), StoreError> {
        let session = session.to_owned();
        self.write(move |conn| {
            check_lease(conn, &session, lease)?;
            conn.execute("DELETE FROM pending WHERE session = ?1", [session]).map(drop).map_err(backend)
        })
        .await
    }

    async fn acquire_lease(&self, session: &str, holder: &str, ttl: std::time::Duration) -> Result<Lease, StoreError> {
        let (session, holder) = (session.to_owned(), holder.to_owned());
        self.write_value(move |conn| {
            let now = now_ms();
            if let Some(current) = lease_row(conn, &session)?
                && current.holder != holder
                && current.expires_at_ms > now
            {
                return Err(StoreError::LeaseHeld {
                    session,
                    holder: current.holder,
                    expires_in_ms: (current.expires_at_ms - now) as u64,
                });
            }
            let (token, expires_at_ms): (i64, i64) = conn
                .query_row(
                    "UPDATE sessions SET lease_holder = ?2, lease_token = lease_token + 1, lease_expires_ms = ?3
                     WHERE id = ?1 RETURNING lease_token, lease_expires_ms",
                    params![session, holder, now.saturating_add(ttl_ms(ttl))],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(backend)?;
            Ok(Lease { session, holder, token: token as u64, expires_at_ms })
        })
        .await
    }

    async fn renew_lease(&self, session: &str, token: u64, ttl: std::time::Duration) -> Result<Lease, StoreError> {
        let session = session.to_owned();
        self.write_value(move |conn| {
            let renewed: Option<(String, i64)> = conn
                .query_row(
                    "UPDATE sessions SET lease_expires_ms = ?3
                     WHERE id = ?1 AND lease_token = ?2 AND lease_holder IS NOT NULL
                     RETURNING lease_holder, lease_expires_ms",
                    params![session, token as i64, now_ms().saturating_add(ttl_ms(ttl))],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            match renewed {
                Some((holder, expires_at_ms)) => Ok(Lease { session, holder, token, expires_at_ms }),
                None => {
                    let reason = match lease_row(conn, &session)? {
                        Some(current) => format!("`{}` holds it with token {}", current.holder, current.token),
                        None => "the lease was released".to_owned(),
                    };
                    Err(StoreError::LeaseLost { session, token, reason })
                }
            }
        })
        .await
    }

    async fn release_lease(&self, session: &str, token: u64) -> Result<(), StoreError> {
        let session = session.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE sessions SET lease_holder = NULL, lease_expires_ms = 0 WHERE id = ?1 AND lease_token = ?2",
                params![session, token as i64],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn lease(&self, session: &str) -> Result<Option<Lease>, StoreError> {
        let session = session.to_owned();
        self.read(move |conn| lease_row(conn, &session)).await
    }

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let e = event.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO audit (at_ms, session, tool, capability, request, allowed, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![e.at_ms, e.session, e.tool, e.capability, e.request, e.allowed, e.reason],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn audit_events(&self, session: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
        let session = session.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT at_ms, session, tool, capability, request, allowed, reason FROM audit
                     WHERE ?1 IS NULL OR session = ?1 ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([session], |r| {
                    Ok(AuditEvent {
                        at_ms: r.get(0)?,
                        session: r.get(1)?,
                        tool: r.get(2)?,
                        capability: r.get(3)?,
                        request: r.get(4)?,
                        allowed: r.get(5)?,
                        reason: r.get(6)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn ended_sessions(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.id FROM sessions s
                     LEFT JOIN steps st ON st.session = s.id AND st.seq = s.last_step
                     WHERE (s.lease_holder IS NULL OR s.lease_expires_ms <= ?2)
                       AND COALESCE(st.committed_at_ms, s.created_at_ms) < ?1
                     ORDER BY COALESCE(st.committed_at_ms, s.created_at_ms), s.id LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = stmt.query_map(params![before_ms, now_ms(), limit], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_audit(&self, scope: AuditScope<'_>, before_ms: i64) -> Result<u64, StoreError> {
        let session = match scope {
            AuditScope::Session(id) => Some(id.to_owned()),
            AuditScope::DeletedSessions => None,
        };
        self.write_value(move |conn| {
            let deleted = match &session {
                Some(id) => conn.execute("DELETE FROM audit WHERE session = ?1 AND at_ms < ?2", params![id, before_ms]),
                None => conn.execute(
                    "DELETE FROM audit WHERE at_ms < ?1 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = audit.session)",
                    [before_ms],
                ),
            };
            Ok(deleted.map_err(backend)? as u64)
        })
        .await
    }
    // ---- Agent runs (implemented below) ----

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.sqlite_create_run(run).await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.sqlite_run(id).await
    }

    async fn list_runs(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError> {
        self.sqlite_list_runs(status).await
    }

    async fn update_run(&self, run: &RunRecord, lease: Option<u64>) -> Result<(), StoreError> {
        self.sqlite_update_run(run, lease).await
    }

    async fn claim_runs(
        &self,
        agents: &[String],
        holder: &str,
        ttl: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.sqlite_claim_runs(agents, holder, ttl, limit).await
    }

    async fn next_ready_at(&self, agents: &[String]) -> Result<Option<i64>, StoreError> {
        self.sqlite_next_ready_at(agents).await
    }

    async fn wait_for_runs(&self, timeout: std::time::Duration) {
        self.sqlite_wait_for_runs(timeout).await
    }

    // ---- Tasks ----

    async fn create_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let task = task.clone();
        self.write(move |conn| {
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO tasks
                         (id, version, created_at_ms, updated_at_ms, session, expires_at_ms, body, claimed_until_ms)
                     VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        task.id,
                        task.created_at_ms,
                        task.updated_at_ms,
                        task.session,
                        task.expires_at_ms,
                        task.body,
                        task.claimed_until_ms
                    ],
                )
                .map_err(backend)?;
            if inserted == 0 { Err(StoreError::TaskExists(task.id)) } else { Ok(()) }
        })
        .await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT id, version, created_at_ms, updated_at_ms, session, expires_at_ms, body, claimed_until_ms
                 FROM tasks WHERE id = ?1",
                [id],
                |r| {
                    Ok(TaskRecord {
                        id: r.get(0)?,
                        version: r.get::<_, i64>(1)? as u64,
                        created_at_ms: r.get(2)?,
                        updated_at_ms: r.get(3)?,
                        session: r.get(4)?,
                        expires_at_ms: r.get(5)?,
                        body: r.get(6)?,
                        claimed_until_ms: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn update_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let task = task.clone();
        self.write(move |conn| {
            let found: Option<i64> = conn
                .query_row("SELECT version FROM tasks WHERE id = ?1", [&task.id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            check_task_version(&task, found.map(|v| v as u64))?;
            conn.execute(
                "UPDATE tasks SET version = ?2, updated_at_ms = ?3, session = ?4, expires_at_ms = ?5, body = ?6,
                     claimed_until_ms = ?7
                 WHERE id = ?1",
                params![
                    task.id,
                    task.version as i64,
                    task.updated_at_ms,
                    task.session,
                    task.expires_at_ms,
                    task.body,
                    task.claimed_until_ms
                ],
            )
            .map(drop)
            .map_err(backend)
        })
        .await
    }

    async fn delete_tasks(&self, scope: TaskScope<'_>) -> Result<u64, StoreError> {
        let (sql, key) = match scope {
            TaskScope::ExpiredBy(now) => {
                ("DELETE FROM tasks WHERE expires_at_ms <= ?1", rusqlite::types::Value::Integer(now))
            }
            TaskScope::Session(s) => {
                ("DELETE FROM tasks WHERE session = ?1", rusqlite::types::Value::Text(s.to_owned()))
            }
        };
        self.write_value(move |conn| conn.execute(sql, [key]).map(|n| n as u64).map_err(backend)).await
    }

    async fn orphaned_tasks(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM tasks WHERE claimed_until_ms <= ?1 ORDER BY claimed_until_ms, id LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt.query_map(params![now_ms, limit as i64], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }
}

// ---- Agent runs ----

const RUN_COLUMNS: &str = "session, agent, status, ready_at_ms, version, created_at_ms, updated_at_ms, body";

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRecord, String)> {
    let status: String = row.get(2)?;
    let record = RunRecord {
        id: row.get(0)?,
        agent: row.get(1)?,
        status: RunStatus::Running,
        ready_at_ms: row.get(3)?,
        version: row.get::<_, i64>(4)? as u64,
        created_at_ms: row.get(5)?,
        updated_at_ms: row.get(6)?,
        body: row.get(7)?,
    };
    Ok((record, status))
}

fn decode_run((mut record, status): (RunRecord, String)) -> Result<RunRecord, StoreError> {
    record.status = status.parse().map_err(|e| StoreError::corrupt(format!("run `{}`: {e}", record.id)))?;
    Ok(record)
}

fn run_version(conn: &Connection, id: &str) -> Result<Option<u64>, StoreError> {
    conn.query_row("SELECT version FROM runs WHERE session = ?1", [id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map(|v| v as u64))
        .map_err(backend)
}

fn write_run(conn: &Connection, run: &RunRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            run.id,
            run.agent,
            run.status.as_str(),
            run.ready_at_ms,
            run.version as i64,
            run.created_at_ms,
            run.updated_at_ms,
            run.body
        ],
    )
    .map(drop)
    .map_err(backend)
}

fn claim_runs(conn: &Connection, agents: &str, holder: &str, ttl: i64, limit: usize) -> Result<Vec<Lease>, StoreError> {
    let now = now_ms();
    let ready: Vec<String> = {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT r.session FROM runs r JOIN sessions s ON s.id = r.session
                 WHERE r.ready_at_ms <= ?1 AND r.agent IN (SELECT value FROM json_each(?2))
                   AND (s.lease_holder IS NULL OR s.lease_expires_ms <= ?1)
                 ORDER BY {DUE_WAITS_FIRST}, r.ready_at_ms LIMIT ?3"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map(params![now, agents, limit as i64], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    let mut leases = Vec::with_capacity(ready.len());
    for session in ready {
        let (token, expires_at_ms): (i64, i64) = conn
            .query_row(
                "UPDATE sessions SET lease_holder = ?2, lease_token = lease_token + 1, lease_expires_ms = ?3
                 WHERE id = ?1 RETURNING lease_token, lease_expires_ms",
                params![session, holder, now.saturating_add(ttl)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(backend)?;
        leases.push(Lease { session, holder: holder.to_owned(), token: token as u64, expires_at_ms });
    }
    Ok(leases)
}

impl SqliteStore {
    pub(super) async fn sqlite_create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = RunRecord { version: 1, ..run.clone() };
        self.write(move |conn| {
            last_step(conn, &run.id)?.ok_or_else(|| StoreError::SessionNotFound(run.id.clone()))?;
            if run_version(conn, &run.id)?.is_some() {
                return Err(StoreError::RunExists(run.id.clone()));
            }
            write_run(conn, &run)
        })
        .await?;
        self.runs_changed.notify_waiters();
        self.runs_changed.notify_one();
        Ok(())
    }

    pub(super) async fn sqlite_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.query_row(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE session = ?1"), [id], run_row)
                .optional()
                .map_err(backend)?
                .map(decode_run)
                .transpose()
        })
        .await
    }

    pub(super) async fn sqlite_list_runs(&self, status: Option<RunStatus>) -> Result<Vec<RunRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at_ms, session"
                ))
                .map_err(backend)?;
            let rows = stmt.query_map([status.map(RunStatus::as_str)], run_row).map_err(backend)?;
            rows.map(|r| r.map_err(backend).and_then(decode_run)).collect()
        })
        .await
    }

    pub(super) async fn sqlite_update_run(&self, run: &RunRecord, lease: Option<u64>) -> Result<(), StoreError> {
        let run = run.clone();
        self.write(move |conn| {
            check_version(&run, run_version(conn, &run.id)?)?;
            if lease.is_some() {
                check_lease(conn, &run.id, lease)?;
            }
            write_run(conn, &run)
        })
        .await?;
        self.runs_changed.notify_waiters();
        self.runs_changed.notify_one();
        Ok(())
    }

    pub(super) async fn sqlite_claim_runs(
        &self,
        agents: &[String],
        holder: &str,
        ttl: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let agents = serde_json::to_string(agents).map_err(backend)?;
        let holder = holder.to_owned();
        self.write_value(move |conn| claim_runs(conn, &agents, &holder, ttl_ms(ttl), limit)).await
    }

    pub(super) async fn sqlite_next_ready_at(&self, agents: &[String]) -> Result<Option<i64>, StoreError> {
        let agents = serde_json::to_string(agents).map_err(backend)?;
        self.read(move |conn| {
            conn.query_row(
                "SELECT MIN(CASE WHEN s.lease_holder IS NOT NULL AND s.lease_expires_ms > r.ready_at_ms
                                 THEN s.lease_expires_ms ELSE r.ready_at_ms END)
                 FROM runs r JOIN sessions s ON s.id = r.session
                 WHERE r.agent IN (SELECT value FROM json_each(?1))",
                [agents],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    pub(super) async fn sqlite_wait_for_runs(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.runs_changed.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::contract::{RandomState, RecordFormatError};
    use crate::source::chain;
    use crate::store::{SessionRecord, StepCommit, StepOutcome, StepRecord};

    fn open_err(path: &Path) -> StoreError {
        match SqliteStore::open(path, Durability::Normal) {
            Ok(_) => panic!("opened {}", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn a_folder_that_cannot_be_created_keeps_the_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a folder").unwrap();
        let err = open_err(&file.join("sub").join("toolhost.db"));
        assert!(matches!(&err, StoreError::Backend { context, .. } if context.starts_with("creating ")), "{err:?}");
        let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error as source");
        // The message names the folder; the cause is the source's, shown once by `chain`.
        assert!(!err.to_string().contains(&io.to_string()), "{err}");
        assert_eq!(chain(&err).to_string(), format!("{err}: {io}"));
    }

    #[test]
    fn a_file_that_is_not_a_database_keeps_the_sqlite_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toolhost.db");
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let err = open_err(&path);
        let sqlite = err.source().and_then(|s| s.downcast_ref::<rusqlite::Error>()).expect("rusqlite::Error as source");
        assert_eq!(sqlite.sqlite_error_code(), Some(rusqlite::ErrorCode::NotADatabase), "{sqlite:?}");
        assert!(chain(&err).to_string().contains(&sqlite.to_string()), "{}", chain(&err));
    }

    #[tokio::test]
    async fn a_corrupt_row_keeps_the_decoders_error() {
        let store = SqliteStore::temporary().unwrap();
        let record = SessionRecord { id: "s".into(), seed: [0; 32], forked_from: None, created_at_ms: 0, last_step: 0 };
        store.create_session(&record).await.unwrap();
        let step = StepRecord {
            seq: 1,
            tool: "t".into(),
            digest: "d".into(),
            input: "{}".into(),
            outcome: StepOutcome::Output("{}".into()),
            journal: Vec::new(),
            writes: Vec::new(),
            random: RandomState { seed: [0; 32], secure: 0, insecure: 0 },
            committed_at_ms: 0,
            files: Vec::new(),
        };
        let commit = StepCommit {
            session: "s".into(),
            step,
            snapshot: None,
            file_chunks: Vec::new(),
            keep_snapshots: 1,
            lease: None,
        };
        store.commit_step(commit).await.unwrap();
        assert_eq!(store.steps("s", None, 0).await.unwrap().len(), 1);

        // The outcome column, tagged as the current format but not its JSON.
        let conn = Connection::open(&store.path).unwrap();
        let mut garbage = crate::contract::encode_record(&StepOutcome::Output("{}".into())).unwrap();
        garbage.truncate(garbage.len() - 2);
        conn.execute("UPDATE steps SET outcome = ?1", [&garbage]).unwrap();
        let err = store.steps("s", None, 0).await.unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt { what, source: Some(_) } if what == "step outcome"), "{err:?}");
        let format = err.source().and_then(|s| s.downcast_ref::<RecordFormatError>()).expect("the format error");
        assert!(matches!(format, RecordFormatError::Json(_)), "{format:?}");
        let json = format.source().and_then(|s| s.downcast_ref::<serde_json::Error>()).expect("serde_json's error");
        assert!(json.is_eof(), "{json}");
        let shown = chain(&err).to_string();
        assert!(shown.starts_with("stored data is unreadable: step outcome: the record (JSON, format"), "{shown}");
        assert!(shown.ends_with(&json.to_string()), "{shown}");
    }
}
