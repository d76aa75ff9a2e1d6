//! The stores the durable suites run against: SQLite in a temporary folder, and PostgreSQL
//! in a database created for the test and dropped after it.
//!
//! PostgreSQL is reached through `TOOLHOST_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, a role allowed to create databases). When
//! no server answers there, each Postgres variant prints `SKIPPED <test>: why` past the
//! output capture (so it shows in the run, not as a silent `ok`) and returns, unless
//! `TOOLHOST_REQUIRE_POSTGRES=1` (set by `.ci/run`), which makes it fail instead.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use toolhost::Store;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store for one test, removed when dropped.
pub struct TestStore {
    /// What `toolhost::store::open` takes.
    pub url: String,
    kind: Kind,
}

enum Kind {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, database: String },
}

pub fn admin_url() -> String {
    std::env::var("TOOLHOST_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl TestStore {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        Self { url, kind: Kind::Sqlite(dir) }
    }

    /// A fresh database on the test server, or `None` (after saying why) if there is none.
    pub async fn postgres() -> Option<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let admin_url = admin_url();
        let client = match admin_client(&admin_url).await {
            Ok(client) => client,
            Err(e) => {
                let why = format!(
                    "no PostgreSQL server reachable at {admin_url} ({e}); set TOOLHOST_TEST_POSTGRES to a \
                     postgres:// URL of a role that may create databases"
                );
                if std::env::var("TOOLHOST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("TOOLHOST_REQUIRE_POSTGRES=1 but {why}");
                }
                // Past the test's output capture, so the skip shows between the results
                // instead of passing as a silent `ok`.
                let test = std::thread::current().name().unwrap_or("a Postgres variant").to_owned();
                let _ =
                    writeln!(std::io::stderr(), "SKIPPED {test}: {why} (TOOLHOST_REQUIRE_POSTGRES=1 fails instead)");
                return None;
            }
        };
        let database = format!(
            "toolhost_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        client.batch_execute(&format!("CREATE DATABASE {database}")).await.expect("creating the test database");
        Some(Self { url: with_database(&admin_url, &database), kind: Kind::Postgres { admin_url, database } })
    }

    /// Opens the store, as a (re)started host does.
    pub async fn open(&self) -> Arc<dyn Store> {
        toolhost::store::open(&self.url).await.unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }

    /// Runs `sql` (`$1` placeholders, text parameters) against the database behind the
    /// store's back, to tamper with it.
    pub async fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match &self.kind {
            Kind::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("sessions.db")).unwrap();
                let sql = sql.replace('$', "?");
                conn.execute(&sql, rusqlite::params_from_iter(params.iter())).unwrap() as u64
            }
            Kind::Postgres { .. } => {
                let client = admin_client(&self.url).await.unwrap();
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                client.execute(sql, &params).await.unwrap()
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, database } = &self.kind else { return };
        let (admin_url, database) = (admin_url.clone(), database.clone());
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let client = admin_client(&admin_url).await?;
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.url),
            Err(_) => eprintln!("dropping the test database {} panicked", self.url),
        }
    }
}

/// Runs an `async fn(&TestStore)` test once per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(&crate::backends::TestStore::sqlite()).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(store) = crate::backends::TestStore::postgres().await {
                    super::$name(&store).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;
