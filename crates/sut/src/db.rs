//! The shop's database: PostgreSQL when one is reachable, embedded SQLite otherwise.
//!
//! One `sqlx` `AnyPool` serves both backends. The schema keeps to the types both read the same
//! way (64-bit integers, text), so every query but the job claim is one text for both. The pool
//! can be resized at runtime (the `db_pool_size` knob): a new pool is swapped in and the old one
//! closes once its connections come back.

use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

/// Which database answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A PostgreSQL server.
    Postgres,
    /// An embedded SQLite file.
    Sqlite,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            anyhow::bail!("unsupported database URL {url:?}: expected postgres://… or sqlite:…")
        }
    }
}

/// The database chosen for this lab and why.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The connection URL.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    /// A sentence for the person starting the lab.
    pub notice: String,
}

/// Picks the database: `explicit` (e.g. `DATABASE_URL`) when given; else a PostgreSQL server on
/// 127.0.0.1:5432 if one answers, with a database of this lab's own ([`lab_database_name`] of
/// `data_dir`, created if missing), so two labs never share orders or indexes; else an SQLite
/// file in `data_dir`.
pub async fn resolve(explicit: Option<&str>, data_dir: &Path) -> anyhow::Result<Resolved> {
    if let Some(url) = explicit {
        let backend = Backend::of_url(url)?;
        return Ok(Resolved {
            url: url.to_owned(),
            backend,
            notice: format!("Using the database at {}.", redact(url)),
        });
    }
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_owned());
    let admin_url = format!("postgres://{user}@127.0.0.1:5432/postgres");
    let name = lab_database_name(data_dir);
    match tokio::time::timeout(Duration::from_secs(2), ensure_pg_database(&admin_url, &name)).await {
        Ok(Ok(())) => Ok(Resolved {
            url: format!("postgres://{user}@127.0.0.1:5432/{name}"),
            backend: Backend::Postgres,
            notice: format!(
                "Using PostgreSQL at 127.0.0.1:5432, database {name} (this lab's own, named after {}).",
                data_dir.display()
            ),
        }),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "no answer within 2 s".to_owned(),
            };
            let path = data_dir.join("observastack.db");
            Ok(Resolved {
                url: format!("sqlite://{}?mode=rwc", path.display()),
                backend: Backend::Sqlite,
                notice: format!(
                    "No PostgreSQL reachable ({why}); using embedded SQLite at {}. Scenarios that need PostgreSQL will say so; set DATABASE_URL to use a server.",
                    path.display()
                ),
            })
        }
    }
}

/// The PostgreSQL database a lab uses by default: `observastack_` followed by the data
/// directory's last component (letters, digits and underscores, at most 24) and eight hex digits
/// of a hash of its whole path, e.g. `observastack_observastack_1f3a9c20` for
/// `~/.local/state/observastack`. Stable for one directory, different for two (a lab's data
/// directory is locked while it runs, so one directory is one lab).
pub fn lab_database_name(data_dir: &Path) -> String {
    let hash = observastack_common::stable_hash32(data_dir.to_string_lossy().as_bytes());
    let base: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let base = base.trim_matches('_');
    if base.is_empty() {
        format!("observastack_{hash:08x}")
    } else {
        format!("observastack_{base}_{hash:08x}")
    }
}

/// Creates database `name` on the server `admin_url` points at, if it does not exist.
pub async fn ensure_pg_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::postgres::PgConnection;
    let mut conn = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("Failed to connect to {admin_url}"))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        // Identifiers cannot be bound; the name is ours (letters, digits, underscores).
        anyhow::ensure!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad database name {name:?}"
        );
        let created = sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await;
        // Another process may have created it in between; that is as good.
        if let Err(e) = created
            && !e.to_string().contains("already exists")
        {
            return Err(e).context("Failed to create the database");
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Hides a password in a URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The pool, resizable at runtime.
pub struct Database {
    backend: Backend,
    url: String,
    pool: RwLock<AnyPool>,
}

/// Why a database call failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection was free within the acquire timeout: the pool is exhausted.
    #[error("no database connection free within {0:?} (pool exhausted)")]
    PoolTimeout(Duration),
    /// Any other failure.
    #[error("database error: {0}")]
    Other(#[from] sqlx::Error),
}

impl Database {
    /// Connects with a pool of `size` connections and an acquire timeout.
    pub async fn connect(url: &str, size: u32, acquire_timeout: Duration) -> anyhow::Result<Self> {
        install_default_drivers();
        let backend = Backend::of_url(url)?;
        let pool = pool_options(size, acquire_timeout)
            .connect(url)
            .await
            .with_context(|| format!("Failed to connect to the database at {}", redact(url)))?;
        if backend == Backend::Sqlite {
            // WAL lets the worker read the queue while the orders service writes.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await
                .context("Failed to enable WAL")?;
        }
        Ok(Self {
            backend,
            url: url.to_owned(),
            pool: RwLock::new(pool),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the schema and seed migrations (idempotent; PostgreSQL serialises concurrent runs
    /// with an advisory lock).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let pool = self.pool();
        let result = match self.backend {
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await,
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await,
        };
        result.context("Failed to apply the database migrations")
    }

    /// Waits until another process has applied the schema (the worker waits for orders).
    pub async fn schema_ready(&self) -> bool {
        sqlx::query("SELECT 1 FROM jobs LIMIT 1")
            .fetch_optional(&self.pool())
            .await
            .is_ok()
    }

    /// The current pool.
    pub fn pool(&self) -> AnyPool {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the pool with one of `size` connections; the old pool closes once drained.
    pub fn resize(&self, size: u32, acquire_timeout: Duration) -> anyhow::Result<()> {
        let fresh = pool_options(size, acquire_timeout)
            .connect_lazy(&self.url)
            .context("Failed to build the resized pool")?;
        let old = std::mem::replace(&mut *self.pool.write().unwrap_or_else(|e| e.into_inner()), fresh);
        tokio::spawn(async move { old.close().await });
        Ok(())
    }

    /// Takes a connection, timing the wait (what the learner sees as pool wait).
    pub async fn acquire(&self) -> Result<(PoolConnection<Any>, Duration), DbError> {
        let pool = self.pool();
        let start = Instant::now();
        match pool.acquire().await {
            Ok(conn) => Ok((conn, start.elapsed())),
            Err(sqlx::Error::PoolTimedOut) => Err(DbError::PoolTimeout(pool.options().get_acquire_timeout())),
            Err(e) => Err(DbError::Other(e)),
        }
    }

    /// Pool occupancy: (size, idle, max).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let pool = self.pool();
        (
            pool.size(),
            pool.num_idle() as u32,
            pool.options().get_max_connections(),
        )
    }
}

/// Begins a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`) and so waits out another writer on the busy timeout: a deferred transaction that
/// reads before it writes cannot wait (once another writer commits, its read snapshot is stale)
/// and fails at once with `database is locked`, which a healthy shop showed on 0.3–0.7% of its
/// orders at 300 requests/s.
pub async fn begin_write(
    conn: &mut PoolConnection<Any>,
    backend: Backend,
) -> Result<Transaction<'_, Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => (**conn).begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => (**conn).begin().await,
    }
}

fn pool_options(size: u32, acquire_timeout: Duration) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
}

/// A product.
#[derive(Debug, Serialize)]
pub struct Product {
    /// Product id (1..=200 in the seed).
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Units sold over all orders (the catalogue's popularity ranking).
    pub sold: i64,
}

/// One line of an order.
#[derive(Debug, Serialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: i64,
    /// Its name.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Unit price in cents at order time.
    pub price_cents: i64,
}

/// A customer's earlier order, as shown beside an order.
#[derive(Debug, Serialize)]
pub struct OrderSummary {
    /// Order id.
    pub id: i64,
    /// Order status.
    pub status: String,
    /// Total in cents.
    pub total_cents: i64,
    /// Number of lines.
    pub item_count: i64,
}

/// An order with its lines and the customer's recent orders.
#[derive(Debug, Serialize)]
pub struct Order {
    /// Order id.
    pub id: i64,
    /// Customer id.
    pub customer_id: i64,
    /// `pending` until the worker fulfils it, then `fulfilled`.
    pub status: String,
    /// Total in cents.
    pub total_cents: i64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// The lines.
    pub items: Vec<OrderLine>,
    /// The customer's five most recent orders.
    pub customer_recent_orders: Vec<OrderSummary>,
}

/// How order reads are planned (the `query_mode` knob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// Filters use the indexes.
    Indexed,
    /// Filters are written so no index applies (`column + 0 = $1`): every read scans the table.
    FullScan,
    /// Related rows are fetched one query per row.
    NPlusOne,
}

/// Counts the statements one request runs (`orders_db_queries_per_request`).
#[derive(Debug, Default)]
pub struct QueryCount(pub u32);

/// All products.
/// The catalogue with each product's popularity: an aggregate over every order line, costly
/// enough (300,000 rows in the seed) that the orders service caches it.
pub async fn list_products(conn: &mut PoolConnection<Any>, count: &mut QueryCount) -> Result<Vec<Product>, DbError> {
    count.0 += 1;
    let rows = sqlx::query(
        "SELECT p.id, p.name, p.price_cents, CAST(COALESCE(SUM(i.quantity), 0) AS BIGINT) \
         FROM products p LEFT JOIN order_items i ON i.product_id = p.id \
         GROUP BY p.id, p.name, p.price_cents ORDER BY p.id",
    )
    .fetch_all(&mut **conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Product {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                price_cents: r.try_get(2)?,
                sold: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}

/// A line of a new order.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct NewLine {
    /// The product.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
}

/// Why an order could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The order names a product that does not exist.
    #[error("unknown product {0}")]
    UnknownProduct(i64),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for PlaceError {
    fn from(e: sqlx::Error) -> Self {
        PlaceError::Db(DbError::Other(e))
    }
}

/// Places an order and enqueues its fulfilment job, in one transaction. Returns the order id and
/// total.
///
/// On PostgreSQL each product's price is read `FOR SHARE`, so a concurrent price change cannot
/// race the order (and a long transaction holding the products' rows makes orders wait for it).
pub async fn place_order(
    conn: &mut PoolConnection<Any>,
    backend: Backend,
    customer_id: i64,
    lines: &[NewLine],
    traceparent: Option<&str>,
    count: &mut QueryCount,
) -> Result<(i64, i64), PlaceError> {
    let now = observastack_common::now_millis();
    let mut tx = begin_write(conn, backend).await?;
    let mut total = 0;
    let mut priced = Vec::with_capacity(lines.len());
    let price_query = match backend {
        Backend::Postgres => "SELECT price_cents FROM products WHERE id = $1 FOR SHARE",
        Backend::Sqlite => "SELECT price_cents FROM products WHERE id = $1",
    };
    for line in lines {
        count.0 += 1;
        let price: Option<i64> = sqlx::query_scalar(price_query)
            .bind(line.product_id)
            .fetch_optional(&mut *tx)
            .await?;
        let price = price.ok_or(PlaceError::UnknownProduct(line.product_id))?;
        total += price * line.quantity;
        priced.push((line, price));
    }
    count.0 += 1;
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (customer_id, status, total_cents, created_at_ms) VALUES ($1, 'pending', $2, $3) RETURNING id",
    )
    .bind(customer_id)
    .bind(total)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    for (line, price) in priced {
        count.0 += 1;
        sqlx::query("INSERT INTO order_items (order_id, product_id, quantity, price_cents) VALUES ($1, $2, $3, $4)")
            .bind(order_id)
            .bind(line.product_id)
            .bind(line.quantity)
            .bind(price)
            .execute(&mut *tx)
            .await?;
    }
    count.0 += 1;
    sqlx::query("INSERT INTO jobs (order_id, status, traceparent, enqueued_at_ms) VALUES ($1, 'queued', $2, $3)")
        .bind(order_id)
        .bind(traceparent.map(str::to_owned))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((order_id, total))
}

/// Reads an order with its lines and the customer's recent orders, planned as `mode` says.
pub async fn get_order(
    conn: &mut PoolConnection<Any>,
    id: i64,
    mode: QueryMode,
    count: &mut QueryCount,
) -> Result<Option<Order>, DbError> {
    count.0 += 1;
    let Some(row) = sqlx::query("SELECT id, customer_id, status, total_cents, created_at_ms FROM orders WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **conn)
        .await?
    else {
        return Ok(None);
    };
    let mut order = Order {
        id: row.try_get(0)?,
        customer_id: row.try_get(1)?,
        status: row.try_get(2)?,
        total_cents: row.try_get(3)?,
        created_at_ms: row.try_get(4)?,
        items: Vec::new(),
        customer_recent_orders: Vec::new(),
    };
    match mode {
        QueryMode::Indexed | QueryMode::FullScan => {
            // `+ 0` keeps the planner from using the index: the same rows, found by a scan.
            let (item_filter, customer_filter) = if mode == QueryMode::Indexed {
                ("i.order_id = $1", "o.customer_id = $1")
            } else {
                ("i.order_id + 0 = $1", "o.customer_id + 0 = $1")
            };
            count.0 += 1;
            let items = sqlx::query(&format!(
                "SELECT i.product_id, p.name, i.quantity, i.price_cents FROM order_items i \
                 JOIN products p ON p.id = i.product_id WHERE {item_filter} ORDER BY i.id"
            ))
            .bind(id)
            .fetch_all(&mut **conn)
            .await?;
            for r in items {
                order.items.push(OrderLine {
                    product_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    quantity: r.try_get(2)?,
                    price_cents: r.try_get(3)?,
                });
            }
            count.0 += 1;
            let recent = sqlx::query(&format!(
                "SELECT o.id, o.status, o.total_cents, \
                 (SELECT COUNT(*) FROM order_items c WHERE c.order_id = o.id) \
                 FROM orders o WHERE {customer_filter} ORDER BY o.id DESC LIMIT 5"
            ))
            .bind(order.customer_id)
            .fetch_all(&mut **conn)
            .await?;
            for r in recent {
                order.customer_recent_orders.push(OrderSummary {
                    id: r.try_get(0)?,
                    status: r.try_get(1)?,
                    total_cents: r.try_get(2)?,
                    item_count: r.try_get(3)?,
                });
            }
        }
        QueryMode::NPlusOne => {
            // The classic ORM shape: one query for the parent rows, then one per row.
            count.0 += 1;
            let items = sqlx::query(
                "SELECT product_id, quantity, price_cents FROM order_items WHERE order_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut **conn)
            .await?;
            for r in items {
                let product_id: i64 = r.try_get(0)?;
                count.0 += 1;
                let name: String = sqlx::query_scalar("SELECT name FROM products WHERE id = $1")
                    .bind(product_id)
                    .fetch_one(&mut **conn)
                    .await?;
                order.items.push(OrderLine {
                    product_id,
                    name,
                    quantity: r.try_get(1)?,
                    price_cents: r.try_get(2)?,
                });
            }
            count.0 += 1;
            let recent =
                sqlx::query("SELECT id, status, total_cents FROM orders WHERE customer_id = $1 ORDER BY id DESC")
                    .bind(order.customer_id)
                    .fetch_all(&mut **conn)
                    .await?;
            for r in recent {
                let other: i64 = r.try_get(0)?;
                count.0 += 1;
                let lines = sqlx::query("SELECT id FROM order_items WHERE order_id = $1")
                    .bind(other)
                    .fetch_all(&mut **conn)
                    .await?;
                if order.customer_recent_orders.len() < 5 {
                    order.customer_recent_orders.push(OrderSummary {
                        id: other,
                        status: r.try_get(1)?,
                        total_cents: r.try_get(2)?,
                        item_count: lines.len() as i64,
                    });
                }
            }
        }
    }
    Ok(Some(order))
}

/// A claimed fulfilment job.
#[derive(Debug)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// The order to fulfil.
    pub order_id: i64,
    /// The W3C trace context of the request that placed the order.
    pub traceparent: Option<String>,
    /// When it was enqueued, ms since the epoch.
    pub enqueued_at_ms: i64,
}

/// Claims the oldest queued job, if any. On PostgreSQL concurrent workers skip each other's
/// locked rows (`FOR UPDATE SKIP LOCKED`); SQLite serialises writers, so a plain single-statement
/// claim is already exclusive there.
pub async fn claim_job(db: &Database) -> Result<Option<Job>, DbError> {
    let sql = match db.backend() {
        Backend::Postgres => {
            "UPDATE jobs SET status = 'running', started_at_ms = $1 WHERE id = \
             (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, order_id, traceparent, enqueued_at_ms"
        }
        Backend::Sqlite => {
            "UPDATE jobs SET status = 'running', started_at_ms = $1 WHERE id = \
             (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1) \
             RETURNING id, order_id, traceparent, enqueued_at_ms"
        }
    };
    let (mut conn, _) = db.acquire().await?;
    let row = sqlx::query(sql)
        .bind(observastack_common::now_millis())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(Job {
            id: r.try_get(0)?,
            order_id: r.try_get(1)?,
            traceparent: r.try_get(2)?,
            enqueued_at_ms: r.try_get(3)?,
        })),
    }
}

/// Marks a job done (and its order fulfilled) or failed.
pub async fn finish_job(db: &Database, job: &Job, ok: bool) -> Result<(), DbError> {
    let (mut conn, _) = db.acquire().await?;
    let mut tx = begin_write(&mut conn, db.backend()).await?;
    sqlx::query("UPDATE jobs SET status = $1, finished_at_ms = $2 WHERE id = $3")
        .bind(if ok { "done" } else { "failed" })
        .bind(observastack_common::now_millis())
        .bind(job.id)
        .execute(&mut *tx)
        .await?;
    if ok {
        sqlx::query("UPDATE orders SET status = 'fulfilled' WHERE id = $1")
            .bind(job.order_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Jobs waiting, and the enqueue time of the oldest (ms since the epoch).
pub async fn queue_depth(db: &Database) -> Result<(i64, Option<i64>), DbError> {
    let (mut conn, _) = db.acquire().await?;
    let row = sqlx::query("SELECT COUNT(*), MIN(enqueued_at_ms) FROM jobs WHERE status = 'queued'")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The index behind the order page's line lookup (`order_items (order_id)`): dropped when
/// `present` is false, created again when true (both idempotent).
pub async fn set_order_items_index(db: &Database, present: bool) -> Result<(), sqlx::Error> {
    let pool = db.pool();
    if present {
        sqlx::query("CREATE INDEX IF NOT EXISTS order_items_order_idx ON order_items (order_id)")
            .execute(&pool)
            .await?;
    } else {
        sqlx::query("DROP INDEX IF EXISTS order_items_order_idx")
            .execute(&pool)
            .await?;
    }
    if db.backend() == Backend::Postgres {
        sqlx::query("ANALYZE order_items").execute(&pool).await?;
    }
    Ok(())
}

/// Brings the schema back to what the migrations declare: creates each declared index the
/// database lacks (an operator's "re-create the index"). Returns the indexes it created.
pub async fn sync_schema(db: &Database) -> Result<Vec<&'static str>, sqlx::Error> {
    let mut created = Vec::new();
    if !order_items_index_exists(db).await? {
        set_order_items_index(db, true).await?;
        created.push("order_items_order_idx");
    }
    Ok(created)
}

/// Whether the index on `order_items (order_id)` exists.
pub async fn order_items_index_exists(db: &Database) -> Result<bool, sqlx::Error> {
    let query = match db.backend() {
        Backend::Postgres => "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'order_items_order_idx'",
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'order_items_order_idx'",
    };
    let n: i64 = sqlx::query_scalar(query).fetch_one(&db.pool()).await?;
    Ok(n > 0)
}

/// The worker's repricing job: one transaction that updates every product's price row and keeps
/// the rows locked for `hold` (as if it called a pricing service per row) before committing.
/// Orders placed meanwhile wait for the locks. Returns how long the locks were held.
pub async fn reprice_products(db: &Database, hold: Duration) -> Result<Duration, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    sqlx::query("UPDATE products SET price_cents = price_cents")
        .execute(&mut *tx)
        .await?;
    let locked = Instant::now();
    tokio::time::sleep(hold).await;
    tx.commit().await?;
    Ok(locked.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shop's write mix at load on SQLite: sixteen clients placing orders (each reads prices,
    /// then writes the order, its lines and its job) while a worker claims and finishes jobs.
    /// With deferred transactions about one order in two hundred failed with `database is
    /// locked`; every one must succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_takes_concurrent_orders_and_job_updates_without_locking_errors() {
        let dir = std::env::temp_dir().join(format!("observastack-sqlite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("shop.db").display());
        let db = std::sync::Arc::new(Database::connect(&url, 8, Duration::from_secs(5)).await.unwrap());
        db.migrate().await.unwrap();
        const CLIENTS: i64 = 16;
        const ORDERS: i64 = 40;
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..CLIENTS {
            let db = db.clone();
            tasks.spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..ORDERS {
                    let placed = async {
                        let (mut conn, _) = db.acquire().await?;
                        let lines = [
                            NewLine {
                                product_id: 1 + client,
                                quantity: 1,
                            },
                            NewLine {
                                product_id: 7,
                                quantity: 2,
                            },
                        ];
                        place_order(
                            &mut conn,
                            Backend::Sqlite,
                            1 + client,
                            &lines,
                            None,
                            &mut QueryCount::default(),
                        )
                        .await
                    };
                    if let Err(e) = placed.await {
                        failures.push(format!("place: {e}"));
                    }
                }
                failures
            });
        }
        let placing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (worker_db, still_placing) = (db.clone(), placing.clone());
        let worker = tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut done = 0;
            loop {
                match claim_job(&worker_db).await {
                    Ok(Some(job)) => match finish_job(&worker_db, &job, true).await {
                        Ok(()) => done += 1,
                        Err(e) => failures.push(format!("finish: {e}")),
                    },
                    Ok(None) if !still_placing.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(e) => failures.push(format!("claim: {e}")),
                }
            }
            (done, failures)
        });
        let mut failures = Vec::new();
        while let Some(result) = tasks.join_next().await {
            failures.extend(result.unwrap());
        }
        placing.store(false, std::sync::atomic::Ordering::SeqCst);
        let (done, worker_failures) = worker.await.unwrap();
        failures.extend(worker_failures);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            failures.is_empty(),
            "{} failures, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        assert_eq!(done, CLIENTS * ORDERS, "every job fulfilled");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn each_data_directory_has_its_own_database_name() {
        let a = lab_database_name(Path::new("/home/ann/.local/state/observastack"));
        let b = lab_database_name(Path::new("/tmp/lab-2"));
        let c = lab_database_name(Path::new("/tmp/other/lab-2"));
        assert!(a.starts_with("observastack_observastack_"), "{a}");
        assert!(b.starts_with("observastack_lab_2_"), "{b}");
        assert_ne!(b, c, "same last component, different directories");
        assert_eq!(a, lab_database_name(Path::new("/home/ann/.local/state/observastack")));
        let long = lab_database_name(Path::new("/x/Ünïcode dir with a very long name indeed"));
        assert!(long.len() <= 63, "PostgreSQL truncates identifiers at 63 bytes: {long}");
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{long}");
        assert!(lab_database_name(Path::new("/")).starts_with("observastack_"));
    }

    #[test]
    fn backend_of_url() {
        assert_eq!(Backend::of_url("postgresql://x").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert!(
            Backend::of_url("mysql://x")
                .unwrap_err()
                .to_string()
                .contains("unsupported")
        );
    }
}
