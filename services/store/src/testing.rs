//! A private PostgreSQL server for tests: `initdb` in a temporary directory, started on a free
//! loopback port (as the `postgres` account when run as root, which PostgreSQL requires),
//! stopped and removed on drop. Needs Debian's `postgresql` package (`./test.sh` installs it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("sdsim-store-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// A private PostgreSQL cluster on a free loopback port.
pub struct Postgres {
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
    /// Initialises a cluster in a fresh temporary directory and starts it.
    pub fn start() -> Postgres {
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

    /// Starts (or restarts) the server; waits until it accepts sessions.
    pub fn launch(&mut self) {
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
            if self.accepts_sessions() {
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

    /// Whether the server accepts sessions. An open port is not enough: while it starts up
    /// (or recovers after a restart) PostgreSQL accepts connections only to refuse them with
    /// "the database system is starting up".
    fn accepts_sessions(&self) -> bool {
        pg_command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Stops the server (fast shutdown); the data stays.
    pub fn stop(&mut self) {
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

    /// The connection URL.
    pub fn url(&self) -> String {
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
