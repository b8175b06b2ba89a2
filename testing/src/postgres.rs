//! PostgreSQL for tests, on free loopback ports, started as the `postgres` account when run as
//! root (the server refuses to run as root). Needs Debian's `postgresql` package (`./test.sh`
//! installs it).
//!
//! Two kinds:
//! - one server shared by every test of a test binary, started on first use, each caller
//!   getting a fresh database ([`fresh_database_url`]): `initdb` costs seconds, a database tens
//!   of milliseconds. A static is never dropped, so the server runs under a small shell that
//!   stops it and removes its files when its stdin reaches end of file — which happens when
//!   the test process ends, however it ends (a panic, `exit`, SIGKILL): the kernel closes the
//!   pipe's other end, which only this process holds.
//! - a private server a test can stop and start again ([`Postgres`], for outages), stopped and
//!   removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to accept sessions (a bound on a hang, not on speed).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings that make a test server fast: nothing it holds must survive a crash.
const UNSAFE_BUT_FAST: [&str; 6] = [
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
];

/// A program of the newest PostgreSQL installed (Debian keeps them per version).
pub fn pg_bin(name: &str) -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (./test.sh installs Debian's postgresql)")
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a PostgreSQL version directory")
        .join("bin")
        .join(name)
}

/// The `postgres` account's uid and gid, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A command run as the `postgres` account when we are root.
fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if running_as_root() {
        let (uid, gid) = postgres_ids().expect("a postgres account (Debian's package creates it)");
        c.uid(uid).gid(gid);
    }
    c
}

/// A fresh directory for a cluster, owned by the account the server runs as, with an
/// initialised cluster in `data/`.
fn init_cluster(tag: &str) -> PathBuf {
    let dir = crate::temp_dir(tag);
    if running_as_root() {
        let (uid, gid) = postgres_ids().expect("a postgres account");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster directory");
    }
    let out = as_postgres(pg_bin("initdb"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(dir.join("data"))
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Whether the server on `port` accepts sessions. An open port is not enough: while it starts
/// up (or recovers after a restart) PostgreSQL accepts connections only to refuse them with
/// "the database system is starting up".
fn accepts_sessions(port: u16) -> bool {
    as_postgres(pg_bin("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres"])
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits until the server on `port` accepts sessions; panics with its log when `child` (the
/// server or the shell running it) exits first or it takes longer than [`START_TIMEOUT`].
fn wait_until_ready(child: &mut Child, port: u16, dir: &Path) {
    let log = || std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("the server's status") {
            panic!("postgres exited ({status}):\n{}", log());
        }
        if accepts_sessions(port) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "postgres did not accept sessions within {START_TIMEOUT:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server shared by this test binary.
struct Shared {
    port: u16,
    /// The shell's stdin: kept open for the life of the process (see the module).
    _lifeline: Mutex<ChildStdin>,
    /// Databases created so far (their names' numbers).
    created: AtomicU32,
    /// One `CREATE DATABASE` at a time: concurrent copies of the template can refuse each other.
    creating: Mutex<()>,
}

/// Runs the server in the foreground of a shell that waits for end of file on stdin, then
/// stops it (SIGINT: fast shutdown) and removes the cluster: `$1` postgres, `$2` the cluster
/// directory, `$3` the port, then the server's own settings.
const SHARED_SERVER_SCRIPT: &str = r#"
postgres="$1" dir="$2" port="$3"
shift 3
"$postgres" -D "$dir/data" -p "$port" -h 127.0.0.1 -k "$dir" "$@" 2>>"$dir/postgres.log" &
server=$!
cat >/dev/null
kill -INT "$server"
wait "$server"
rm -rf "$dir"
"#;

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = init_cluster("pg-shared");
        let port = crate::free_port();
        let mut shell = as_postgres("sh")
            .arg("-c")
            .arg(SHARED_SERVER_SCRIPT)
            .arg("sdsim-test-postgres")
            .arg(pg_bin("postgres"))
            .arg(&dir)
            .arg(port.to_string())
            .args(UNSAFE_BUT_FAST)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh starts postgres");
        wait_until_ready(&mut shell, port, &dir);
        let lifeline = shell.stdin.take().expect("the shell's stdin");
        Shared {
            port,
            _lifeline: Mutex::new(lifeline),
            created: AtomicU32::new(0),
            creating: Mutex::new(()),
        }
    })
}

/// The URL of a new, empty database on this test binary's shared server (started on first
/// use).
pub fn fresh_database_url() -> String {
    let server = shared();
    let name = format!("test_{}", server.created.fetch_add(1, Ordering::Relaxed));
    let _one_at_a_time = server
        .creating
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out = as_postgres(pg_bin("createdb"))
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "postgres", &name])
        .output()
        .expect("createdb runs");
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

/// A private PostgreSQL cluster on a free loopback port, stopped and removed on drop.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// Initialises a cluster in a fresh temporary directory and starts it.
    pub fn start() -> Postgres {
        let mut pg = Postgres {
            dir: init_cluster("pg"),
            port: crate::free_port(),
            child: None,
        };
        pg.launch();
        pg
    }

    /// Starts (or restarts) the server; waits until it accepts sessions.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("the server's log file");
        let mut child = as_postgres(pg_bin("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            .args(UNSAFE_BUT_FAST)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        wait_until_ready(&mut child, self.port, &self.dir);
        self.child = Some(child);
    }

    /// Stops the server (fast shutdown); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: fast shutdown (disconnects clients, then exits).
            // SAFETY: kill has no memory preconditions; the pid is our own child's.
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

    /// The connection URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first column of `sql`'s rows, run with `psql` against `url`.
pub fn column(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new(pg_bin("psql"))
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("psql prints UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}
