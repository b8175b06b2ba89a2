//! A private redis-server on a loopback port, without persistence, killed on drop; a test can
//! kill it (a crash: nothing flushed) and start it again on the same port. Needs
//! `redis-server` on PATH (`./test.sh` installs Debian's package).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer after it starts (a bound on a hang, not on speed).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A redis-server of this test.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts a server on a free port.
    pub fn start() -> Redis {
        Redis::start_on(crate::free_port())
    }

    /// Starts a server on `port`.
    pub fn start_on(port: u16) -> Redis {
        let mut redis = Redis { child: None, port };
        redis.launch();
        redis
    }

    /// Starts (or restarts) the server on its port; waits until it answers PING.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./test.sh installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Kills the server (SIGKILL: a crash, nothing flushed) and waits for it to be gone; its
    /// data is gone and [`Redis::launch`] starts it again on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis.url=...` for this server, an sdsim `--set`.
    pub fn url_setting(&self) -> String {
        format!("redis.url=redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
