//! One repository suite, two backends: the embedded SQLite files and a real PostgreSQL server
//! (started here from Debian's postgresql package on a free loopback port, stopped after).

use sdsim_store::{migrate, Options, Statement, Store, StoreError, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn on_monoio<F: std::future::Future<Output = ()>>(f: F) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(f);
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sdsim-store-{tag}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

/// A private PostgreSQL cluster on a free loopback port.
struct Postgres {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn pg_bin(name: &str) -> PathBuf {
    let base = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (./test.sh installs Debian's postgresql)")
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a PostgreSQL version directory");
    base.join("bin").join(name)
}

/// The `postgres` account's uid and gid, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// A PostgreSQL program, run as the `postgres` account when we are root (the server refuses to
/// run as root). The process is the program itself, so signals reach it directly.
fn pg_command(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(pg_bin(program));
    if unsafe { geteuid() } == 0 {
        let (uid, gid) = postgres_ids().expect("a postgres account (Debian's package creates it)");
        c.uid(uid).gid(gid);
    }
    c
}

extern "C" {
    fn geteuid() -> u32;
}

impl Postgres {
    fn start() -> Postgres {
        let dir = temp_dir("pg");
        if unsafe { geteuid() } == 0 {
            let (uid, gid) = postgres_ids().expect("a postgres account");
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let out = pg_command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Postgres {
            dir,
            port,
            child: None,
        };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .unwrap();
        let child = pg_command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                self.child = None;
                panic!("postgres exited ({status}):\n{log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                panic!("postgres did not become ready in 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown (disconnects clients, then exits).
            unsafe { kill(child.id() as i32, 2) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    assert_eq!(migrate::run(store).await.unwrap(), vec![1, 2]);
    assert_eq!(
        migrate::run(store).await.unwrap(),
        Vec::<i64>::new(),
        "idempotent"
    );
    assert_eq!(migrate::applied(store).await.unwrap(), vec![1, 2]);
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
            monoio::spawn(async move {
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
    let dir = temp_dir("sqlite");
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
    let store = Store::open(
        &pg.url(),
        &Options {
            connect_timeout: Duration::from_secs(2),
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
            began.elapsed() < Duration::from_secs(3),
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
