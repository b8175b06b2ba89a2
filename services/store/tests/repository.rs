//! One repository suite, two backends: the embedded SQLite files and a real PostgreSQL server
//! (started here from Debian's postgresql package on a free loopback port, stopped after).

use sdsim_store::{migrate, Options, Statement, Store, StoreError, Value};
use sdsim_testing::postgres::Postgres;
use std::time::{Duration, Instant};

fn on_monoio<F: std::future::Future<Output = ()>>(f: F) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(f);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn insert_user(store: &Store, id: &str, email: &str) -> Result<u64, StoreError> {
    store
        .execute(
            "INSERT INTO auth_schema.users (id, email, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            vec![id.into(), email.into(), "argon2id$...".into(), now().into()],
        )
        .await
}

/// The suite both backends must pass.
async fn suite(store: &Store) {
    assert_eq!(
        migrate::run(store).await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        migrate::run(store).await.unwrap(),
        Vec::<i64>::new(),
        "idempotent"
    );
    assert_eq!(
        migrate::applied(store).await.unwrap(),
        vec![1, 2, 3, 4, 5, 6, 7, 8]
    );
    store.ping().await.unwrap();

    assert_eq!(
        insert_user(store, "u1", "ada@example.com").await.unwrap(),
        1
    );
    let row = store
        .query_opt("SELECT id, email, email_verified, failed_logins, locked_until FROM auth_schema.users WHERE email = $1", vec!["ada@example.com".into()])
        .await
        .unwrap()
        .expect("the user");
    assert_eq!(row.text(0).unwrap(), "u1");
    assert!(!row.bool(2).unwrap());
    assert_eq!(row.int(3).unwrap(), 0);
    assert_eq!(row.opt_int(4).unwrap(), None);
    assert!(
        row.text(3).is_err(),
        "a type mismatch is an error, not a panic"
    );

    // Placeholders bind by number, whatever their order in the text.
    let n = store
        .execute(
            "UPDATE auth_schema.users SET failed_logins = $2 WHERE id = $1",
            vec!["u1".into(), 3.into()],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = store
        .query_opt(
            "SELECT failed_logins FROM auth_schema.users WHERE id = $1",
            vec!["u1".into()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.int(0).unwrap(), 3);
    store
        .execute(
            "UPDATE auth_schema.users SET failed_logins = 0 WHERE id = $1",
            vec!["u1".into()],
        )
        .await
        .unwrap();

    // Unique email: a conflict naming the constraint, nothing written.
    let err = insert_user(store, "u2", "ada@example.com")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // A batch is all or nothing.
    let err = store
        .batch(vec![
            Statement::new("INSERT INTO auth_schema.users (id, email, password_hash, created_at, updated_at) VALUES ($1, $2, 'h', 0, 0)", vec!["u3".into(), "bob@example.com".into()]),
            Statement::new("INSERT INTO auth_schema.users (id, email, password_hash, created_at, updated_at) VALUES ($1, $2, 'h', 0, 0)", vec!["u4".into(), "ada@example.com".into()]),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(store
        .query_opt(
            "SELECT id FROM auth_schema.users WHERE id = $1",
            vec!["u3".into()]
        )
        .await
        .unwrap()
        .is_none());

    // Foreign keys hold.
    let err = store
        .execute("INSERT INTO auth_schema.sessions (id, user_id, created_at, expires_at) VALUES ('s0', 'nobody', 0, 1)", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "{err:?}");

    // Use-once updates (refresh-token rotation): the second use changes nothing.
    store
        .batch(vec![
            Statement::new("INSERT INTO auth_schema.sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)", vec!["s1".into(), "u1".into(), now().into(), (now() + 3600).into()]),
            Statement::new("INSERT INTO auth_schema.refresh_tokens (token_hash, session_id, family, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)", vec!["h1".into(), "s1".into(), "f1".into(), now().into(), (now() + 3600).into()]),
        ])
        .await
        .unwrap();
    let use_once = "UPDATE auth_schema.refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL";
    assert_eq!(
        store
            .execute(use_once, vec![now().into(), "h1".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .execute(use_once, vec![now().into(), "h1".into()])
            .await
            .unwrap(),
        0
    );

    // RETURNING, NULLs and booleans as parameters.
    let rows = store
        .query(
            "INSERT INTO auth_schema.outbox (kind, recipient, payload, created_at, sent_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            vec!["verify_email".into(), "ada@example.com".into(), "{}".into(), now().into(), Value::Null],
        )
        .await
        .unwrap();
    assert!(rows[0].int(0).unwrap() >= 1);
    assert_eq!(
        store
            .execute(
                "UPDATE auth_schema.users SET email_verified = $1 WHERE id = $2",
                vec![true.into(), "u1".into()]
            )
            .await
            .unwrap(),
        1
    );
    let row = store
        .query_opt(
            "SELECT email_verified FROM auth_schema.users WHERE id = 'u1'",
            vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(row.bool(0).unwrap());

    // The seeded RBAC data.
    let perms = store
        .query("SELECT permission FROM auth_schema.role_permissions WHERE role = $1 ORDER BY permission", vec!["user".into()])
        .await
        .unwrap();
    let perms: Vec<&str> = perms.iter().map(|r| r.text(0).unwrap()).collect();
    assert_eq!(perms, ["project:read", "project:write", "simulation:start"]);

    // Concurrent writers and readers from one shard.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            sdsim_core::runtime::spawn("concurrent-writer", async move {
                insert_user(&store, &format!("c{i}"), &format!("c{i}@example.com")).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let n = store
        .query_opt("SELECT COUNT(*) FROM auth_schema.users", vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.int(0).unwrap(), 51);
}

#[test]
fn sqlite_backend_passes_the_suite() {
    let dir = sdsim_testing::temp_dir("store-sqlite");
    let url = format!("sqlite://{}/sdsim.db", dir.display());
    let store = Store::open(&url, &Options::default()).unwrap();
    on_monoio(suite(&store));
    // The schemas are files beside the main one, in WAL mode.
    assert!(dir.join("sdsim.auth_schema.db").exists());
    assert!(dir.join("sdsim.auth_schema.db-wal").exists() || dir.join("sdsim.db-wal").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_backend_passes_the_suite_and_survives_an_outage() {
    let mut pg = Postgres::start();
    // A connect timeout the calls below must not wait for.
    let connect_timeout = Duration::from_secs(30);
    let store = Store::open(
        &pg.url(),
        &Options {
            connect_timeout,
            ..Options::default()
        },
    )
    .unwrap();
    on_monoio(suite(&store));
    // The database goes away: calls fail fast with Unavailable...
    pg.stop();
    on_monoio(async {
        let began = Instant::now();
        let err = store.ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store.ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            began.elapsed() < connect_timeout / 3,
            "{:?}",
            began.elapsed()
        );
    });
    // ...and the store recovers by itself when it is back.
    pg.launch();
    on_monoio(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match store.ping().await {
                Ok(()) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no recovery: {e}");
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let n = store
            .query_opt("SELECT COUNT(*) FROM auth_schema.users", vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n.int(0).unwrap(),
            51,
            "accepted writes survived the restart"
        );
    });
}

#[test]
fn bad_urls_are_named() {
    for url in ["mysql://x", "postgres://[bad", "sqlite"] {
        let err = Store::open(url, &Options::default()).err().expect(url);
        assert!(err.to_string().contains("storage.url"), "{url}: {err}");
    }
}
