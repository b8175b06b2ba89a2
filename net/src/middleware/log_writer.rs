//! Log lines written off the shards: each shard formats its lines into a buffer of its own
//! ([`ShardLog`]), and one writer thread ([`LogWriter`]) takes the buffers whole and writes
//! them to the output (a file, a pipe, a terminal), so a shard never waits on a `write(2)`.
//!
//! - **Order**: a shard's buffer is taken whole and written in one piece, so a shard's lines
//!   arrive in the order it wrote them (lines of different shards interleave by buffer).
//! - **Bounded**: a buffer holding `buffer_bytes` or more takes no more lines: while the writer
//!   is behind (a slow disk, a stalled pipe), new lines are dropped and the caller counts them;
//!   the shard never blocks and memory stays bounded.
//! - **Latency**: the writer is woken when a buffer passes a quarter of its size, and looks at
//!   every buffer at least every [`FLUSH_INTERVAL`], so a quiet server's lines are out within
//!   that.
//! - **Shutdown**: [`LogWriter::finish`] writes what every buffer still holds, then returns.
//!
//! Cost on the shard: an uncontended lock, the formatting itself, and one `unpark` per quarter
//! buffer.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// How often the writer looks at every buffer when nothing wakes it.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Lines one shard has formatted and the writer has not taken yet.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: u64,
    /// The writer has been woken for these lines already.
    woken: bool,
}

/// What the shards and the writer thread share.
struct Shared {
    buffers: Mutex<Vec<Arc<Mutex<Pending>>>>,
    closing: AtomicBool,
    writer: OnceLock<Thread>,
    written: AtomicU64,
    lost: AtomicU64,
}

impl Shared {
    fn wake(&self) {
        if let Some(thread) = self.writer.get() {
            thread.unpark();
        }
    }
}

/// The writer thread and the buffers it drains; see the module documentation.
pub struct LogWriter {
    shared: Arc<Shared>,
    buffer_bytes: usize,
    thread: Option<JoinHandle<()>>,
}

/// What the writer did over its life (from [`LogWriter::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterTotals {
    /// Lines written to the output.
    pub written: u64,
    /// Lines taken from a buffer but lost to a failed write.
    pub lost: u64,
}

impl LogWriter {
    /// Starts the writer thread (`name`), writing to `output`; each shard's buffer takes up to
    /// `buffer_bytes` (at least 4 KiB) before it drops lines.
    pub fn start(
        name: &str,
        output: Box<dyn Write + Send>,
        buffer_bytes: usize,
    ) -> std::io::Result<LogWriter> {
        let shared = Arc::new(Shared {
            buffers: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            writer: OnceLock::new(),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
            let shared = Arc::clone(&shared);
            move || drain(&shared, output)
        })?;
        let _ = shared.writer.set(thread.thread().clone());
        Ok(LogWriter {
            shared,
            buffer_bytes: buffer_bytes.max(4096),
            thread: Some(thread),
        })
    }

    /// A new buffer for one shard (or any one thread), drained by this writer.
    pub fn shard_log(&self) -> ShardLog {
        self.source().shard_log()
    }

    /// What makes buffers drained by this writer, for code that starts shards later.
    pub fn source(&self) -> LogSource {
        LogSource {
            shared: Arc::clone(&self.shared),
            buffer_bytes: self.buffer_bytes,
        }
    }

    /// Writes every line the buffers still hold, stops the thread and says what it did. Lines
    /// added afterwards are not written.
    pub fn finish(mut self) -> WriterTotals {
        self.stop();
        WriterTotals {
            written: self.shared.written.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
        }
    }

    fn stop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes buffers drained by one [`LogWriter`] (cheap to clone, and sent to the threads that
/// will write lines).
#[derive(Clone)]
pub struct LogSource {
    shared: Arc<Shared>,
    buffer_bytes: usize,
}

impl LogSource {
    /// A new buffer for one shard (or any one thread).
    pub fn shard_log(&self) -> ShardLog {
        let pending = Arc::new(Mutex::new(Pending {
            bytes: Vec::with_capacity(self.buffer_bytes / 4),
            ..Pending::default()
        }));
        lock(&self.shared.buffers).push(Arc::clone(&pending));
        ShardLog {
            pending,
            shared: Arc::clone(&self.shared),
            capacity: self.buffer_bytes,
            wake_at: self.buffer_bytes / 4,
        }
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the bytes are still bytes.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer thread: takes each buffer whole (leaving an empty one in its place) and writes
/// it, until asked to stop and nothing is left.
fn drain(shared: &Shared, mut output: Box<dyn Write + Send>) {
    let mut spare: Vec<u8> = Vec::new();
    let mut reported_failure = false;
    loop {
        // Read before the sweep: a stop requested after it finds the buffers drained by the
        // next sweep, which runs because `closing` was false here.
        let closing = shared.closing.load(Ordering::Acquire);
        let buffers: Vec<Arc<Mutex<Pending>>> = lock(&shared.buffers).clone();
        let mut wrote = false;
        for buffer in &buffers {
            let lines = {
                let mut pending = lock(buffer);
                if pending.bytes.is_empty() {
                    continue;
                }
                std::mem::swap(&mut pending.bytes, &mut spare);
                pending.woken = false;
                std::mem::take(&mut pending.lines)
            };
            wrote = true;
            match output.write_all(&spare) {
                Ok(()) => shared.written.fetch_add(lines, Ordering::Relaxed),
                Err(e) => {
                    if !reported_failure {
                        eprintln!("sdsim: the log output failed ({e}); lines are being lost");
                        reported_failure = true;
                    }
                    shared.lost.fetch_add(lines, Ordering::Relaxed)
                }
            };
            spare.clear();
        }
        if wrote {
            let _ = output.flush();
            continue;
        }
        if closing {
            let _ = output.flush();
            return;
        }
        std::thread::park_timeout(FLUSH_INTERVAL);
    }
}

/// One shard's buffer of lines; see the module documentation.
pub struct ShardLog {
    pending: Arc<Mutex<Pending>>,
    shared: Arc<Shared>,
    capacity: usize,
    wake_at: usize,
}

impl ShardLog {
    /// Appends one line, written by `format` (which adds its own newline), unless the buffer is
    /// full: then the line is dropped and `false` returned, for the caller to count.
    pub fn line(&self, format: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut pending = lock(&self.pending);
        if pending.bytes.len() >= self.capacity {
            return false;
        }
        format(&mut pending.bytes);
        pending.lines += 1;
        if pending.bytes.len() >= self.wake_at && !pending.woken {
            pending.woken = true;
            drop(pending);
            self.shared.wake();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output that records what it is given, and can be held: while held, a write waits
    /// (having announced that it started) until the test lets it go.
    #[derive(Clone)]
    struct HeldOutput {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
        started: mpsc::SyncSender<()>,
    }

    impl Write for HeldOutput {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.started.try_send(());
            if let Some(gate) = lock(&self.gate).as_ref() {
                let _ = gate.recv();
            }
            lock(&self.written).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn held() -> (HeldOutput, mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (release, gate) = mpsc::channel();
        let (started, writes) = mpsc::sync_channel(1024);
        let output = HeldOutput {
            written: Arc::default(),
            gate: Arc::new(Mutex::new(Some(gate))),
            started,
        };
        (output, release, writes)
    }

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) {
        // 64 bytes a line: the test knows exactly how many fit.
        move |buf: &mut Vec<u8>| buf.extend_from_slice(format!("line {n:058}\n").as_bytes())
    }

    fn numbers(written: &[u8]) -> Vec<usize> {
        std::str::from_utf8(written)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn a_writer_that_falls_behind_drops_new_lines_and_loses_no_earlier_one() {
        let (output, release, writes) = held();
        let written = Arc::clone(&output.written);
        let writer = LogWriter::start("test-log", Box::new(output), 4096).unwrap();
        let log = writer.shard_log();
        // Line 0 alone reaches the writer (finish-free: it is woken every FLUSH_INTERVAL), which
        // then sits in its write until released.
        assert!(log.line(line(0)));
        writes.recv().unwrap();
        // The buffer takes 4096 bytes: lines 1..=64 fit (the 64th starts at 4032 bytes), then
        // every line is dropped until the writer catches up.
        let kept: Vec<bool> = (1..=100).map(|n| log.line(line(n))).collect();
        assert!(kept[..64].iter().all(|&k| k), "{kept:?}");
        assert!(kept[64..].iter().all(|&k| !k), "{kept:?}");
        // Released, the writer takes the held lines; the buffer has room again.
        drop(release);
        let totals = {
            let log_after = log;
            let mut taken = false;
            for _ in 0..10_000 {
                if log_after.line(line(101)) {
                    taken = true;
                    break;
                }
                writes.recv().unwrap();
            }
            assert!(taken, "the buffer never had room again");
            writer.finish()
        };
        let expected: Vec<usize> = (0..=64).chain([101]).collect();
        assert_eq!(numbers(&lock(&written)), expected);
        assert_eq!(
            totals,
            WriterTotals {
                written: 66,
                lost: 0
            }
        );
    }

    #[test]
    fn finish_writes_every_buffered_line_in_order_per_shard() {
        let (output, release, _writes) = held();
        drop(release);
        *lock(&output.gate) = None;
        let written = Arc::clone(&output.written);
        let writer = LogWriter::start("test-log", Box::new(output), 1 << 20).unwrap();
        let shards = [writer.shard_log(), writer.shard_log()];
        for n in 0..2_000 {
            assert!(shards[n % 2].line(line(n)));
        }
        let totals = writer.finish();
        assert_eq!(totals.written, 2_000);
        let all = numbers(&lock(&written));
        assert_eq!(all.len(), 2_000);
        for parity in 0..2 {
            let shard: Vec<usize> = all.iter().copied().filter(|n| n % 2 == parity).collect();
            let expected: Vec<usize> = (0..2_000).filter(|n| n % 2 == parity).collect();
            assert_eq!(shard, expected, "shard {parity}'s lines in order");
        }
    }

    #[test]
    fn a_failed_write_is_counted_as_lost() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let writer = LogWriter::start("test-log", Box::new(Broken), 1 << 20).unwrap();
        let log = writer.shard_log();
        for n in 0..10 {
            assert!(log.line(line(n)));
        }
        assert_eq!(
            writer.finish(),
            WriterTotals {
                written: 0,
                lost: 10
            }
        );
    }
}
