//! Transactions that end without an outcome — their future dropped at a deadline, by a closed
//! connection or at shutdown — must leave nothing behind: not their own writes, and no open
//! transaction for the next caller to commit by accident. On a real PostgreSQL server (started
//! here on a free loopback port) and on the embedded SQLite files.

use futures_util::future::{select, Either};
use sdsim_store::{Options, Statement, Store, StoreError};
use sdsim_testing::postgres::Postgres;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

fn on_monoio<F: std::future::Future<Output = ()>>(f: F) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(f);
}

fn insert(id: &str) -> Statement {
    Statement::new("INSERT INTO notes (id) VALUES ($1)", vec![id.into()])
}

async fn ids(store: &Store) -> Vec<String> {
    store
        .query("SELECT id FROM notes ORDER BY id", vec![])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text(0).unwrap().to_string())
        .collect()
}

/// Waits until `sessions` sessions wait for an advisory lock (e.g. the transaction under test
/// has run its first statement and is parked on its second). Bounded only against a real hang.
async fn until_sessions_wait_for_a_lock(store: &Store, sessions: i64) {
    for _ in 0..3000 {
        let waiting = store
            .query_opt(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                vec![],
            )
            .await
            .unwrap()
            .unwrap()
            .int(0)
            .unwrap();
        if waiting == sessions {
            return;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sessions} sessions never waited for a lock together");
}

#[test]
fn a_dropped_postgres_transaction_leaves_no_writes_and_no_open_transaction() {
    let pg = Postgres::start();
    let store = Store::open(&pg.url(), &Options::default()).unwrap();
    on_monoio(async {
        store
            .execute_script("CREATE TABLE notes (id TEXT PRIMARY KEY);")
            .await
            .unwrap();
        // Autocommit statements run on the shard's shared connection: it takes the lock the
        // transaction's second statement will wait for.
        store
            .query("SELECT 1 FROM (SELECT pg_advisory_lock(7)) AS l", vec![])
            .await
            .unwrap();
        {
            let abandoned = pin!(store.batch(vec![
                insert("abandoned"),
                Statement::new("SELECT pg_advisory_lock(7)", vec![]),
            ]));
            let watcher = pin!(until_sessions_wait_for_a_lock(&store, 1));
            match select(abandoned, watcher).await {
                Either::Left((result, _)) => panic!("the transaction did not block: {result:?}"),
                // The transaction's future is dropped here, after its first write.
                Either::Right(((), _abandoned)) => {}
            }
        }
        store
            .query("SELECT pg_advisory_unlock(7)", vec![])
            .await
            .unwrap();
        store
            .batch(vec![insert("kept-1"), insert("kept-2")])
            .await
            .unwrap();
        assert_eq!(
            ids(&store).await,
            ["kept-1", "kept-2"],
            "only the second transaction's writes exist"
        );
        // And the next transaction is not nested in anything either: a failing one rolls back
        // alone, the one after commits alone.
        let err = store
            .batch(vec![insert("rolled-back"), insert("kept-1")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        store
            .batch(vec![insert("kept-3"), insert("kept-4")])
            .await
            .unwrap();
        assert_eq!(ids(&store).await, ["kept-1", "kept-2", "kept-3", "kept-4"]);
    });
}

#[test]
fn a_postgres_statement_over_the_statement_timeout_is_cancelled_and_named() {
    let pg = Postgres::start();
    let store = Store::open(
        &pg.url(),
        &Options {
            statement_timeout: Duration::from_millis(200),
            ..Options::default()
        },
    )
    .unwrap();
    on_monoio(async {
        // pg_sleep(30) can only end early because the server cancelled it.
        let err = store
            .query("SELECT pg_sleep(30)", vec![])
            .await
            .unwrap_err();
        match &err {
            StoreError::Unavailable(why) => {
                assert!(why.contains("storage.statement_timeout"), "{why}")
            }
            other => panic!("expected Unavailable naming the key, got {other:?}"),
        }
        // The connection carries on.
        store.ping().await.unwrap();
        let err = store
            .batch(vec![
                Statement::new("SELECT 1", vec![]),
                Statement::new("SELECT pg_sleep(30)", vec![]),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        store.ping().await.unwrap();
    });
}

#[test]
fn a_dropped_sqlite_batch_is_all_or_nothing() {
    let dir = sdsim_testing::temp_dir("store-tx");
    let url = format!("sqlite://{}/sdsim.db", dir.display());
    let store = Store::open(&url, &Options::default()).unwrap();
    on_monoio(async {
        store
            .execute_script("CREATE TABLE notes (id TEXT PRIMARY KEY);")
            .await
            .unwrap();
        // The batch runs whole on the writer thread whatever happens to the future that asked
        // for it: dropping the future right after the first poll cannot split it.
        let many: Vec<Statement> = (0..500).map(|i| insert(&format!("a{i:03}"))).collect();
        {
            let mut dropped = pin!(store.batch(many));
            std::future::poll_fn(|cx| {
                let _ = dropped.as_mut().poll(cx);
                std::task::Poll::Ready(())
            })
            .await;
        }
        store.batch(vec![insert("b1"), insert("b2")]).await.unwrap();
        let rows = ids(&store).await;
        let firsts = rows.iter().filter(|id| id.starts_with('a')).count();
        assert!(firsts == 0 || firsts == 500, "{firsts} of 500 rows");
        assert!(rows.contains(&"b1".to_string()) && rows.contains(&"b2".to_string()));
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// A check-then-insert under READ COMMITTED: `INSERT … SELECT … WHERE (SELECT COUNT(*) …) < 1`.
fn insert_within_limit(id: &str) -> Statement {
    Statement::new(
        "INSERT INTO runs (id, user_id) SELECT $1, 'ada' WHERE (SELECT COUNT(*) FROM runs WHERE user_id = 'ada') < 1",
        vec![id.into()],
    )
}

/// Two check-then-insert transactions on two connections, the first held open after its insert:
/// with `batch` both pass the check (each counts only committed rows); with `batch_exclusive`
/// the second waits for the first and counts its row.
fn racing_inserts(exclusive: bool) -> Vec<String> {
    let pg = Postgres::start();
    // Two stores on one database: two transaction connections on this one thread.
    let first = Store::open(&pg.url(), &Options::default()).unwrap();
    let second = Store::open(&pg.url(), &Options::default()).unwrap();
    let mut inserted = Vec::new();
    on_monoio(async {
        first
            .execute_script("CREATE TABLE runs (id TEXT PRIMARY KEY, user_id TEXT NOT NULL);")
            .await
            .unwrap();
        first
            .query("SELECT 1 FROM (SELECT pg_advisory_lock(7)) AS l", vec![])
            .await
            .unwrap();
        let run = |store: &Store, statements: Vec<Statement>| {
            let store = store.clone();
            async move {
                if exclusive {
                    store.batch_exclusive("runs:ada", statements).await
                } else {
                    store.batch(statements).await
                }
            }
        };
        // The first transaction inserts, then parks on the lock the test holds: its row is
        // written but not committed.
        let held = sdsim_core::runtime::spawn(
            "racing-transaction",
            run(
                &first,
                vec![
                    insert_within_limit("first"),
                    Statement::new("SELECT pg_advisory_lock(7)", vec![]),
                ],
            ),
        );
        until_sessions_wait_for_a_lock(&second, 1).await;
        let mut racer = Some(sdsim_core::runtime::spawn(
            "racing-transaction",
            run(
                &second,
                vec![
                    insert_within_limit("second"),
                    Statement::new("SELECT 1", vec![]),
                ],
            ),
        ));
        if exclusive {
            // The racer must queue behind the first transaction's key lock: two sessions wait.
            until_sessions_wait_for_a_lock(&second, 2).await;
        } else {
            racer.take().unwrap().await.unwrap();
        }
        first
            .query("SELECT pg_advisory_unlock(7)", vec![])
            .await
            .unwrap();
        held.await.unwrap();
        if let Some(racer) = racer {
            racer.await.unwrap();
        }
        inserted = first
            .query("SELECT id FROM runs ORDER BY id", vec![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0).unwrap().to_string())
            .collect();
    });
    inserted
}

#[test]
fn check_then_insert_races_past_a_limit_without_the_exclusive_batch() {
    assert_eq!(racing_inserts(false), ["first", "second"]);
}

#[test]
fn an_exclusive_batch_serialises_check_then_insert_on_postgres() {
    assert_eq!(racing_inserts(true), ["first"]);
}
