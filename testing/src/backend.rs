//! The backends a test runs on: the runtime driver (`runtime.driver`, io_uring or epoll) and
//! the storage (SQLite or PostgreSQL).
//!
//! A test function marked `#[backends(epoll, io_uring)]` becomes one `#[test]` per backend;
//! each runs the function inside [`Backend::run`], which makes the backend this thread's
//! [`current`] one. The code that starts servers for tests asks [`current`] for the settings
//! to apply ([`Backend::driver_setting`], [`Backend::database_url`]) before the test's own, so
//! a test body reads the same on every backend. Outside [`Backend::run`] the current backend
//! is [`Backend::DEFAULT`]: the configured driver (`auto`) and SQLite.

use std::cell::Cell;

/// The runtime driver of every shard (`runtime.driver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `runtime.driver = "io_uring"`.
    IoUring,
    /// `runtime.driver = "epoll"`.
    Epoll,
}

/// Where the server keeps its data (`storage.url`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// An SQLite file in a fresh directory (the tests' servers' default).
    Sqlite,
    /// A fresh database on the PostgreSQL server this test binary shares
    /// ([`crate::postgres::fresh_database_url`]).
    Postgres,
}

/// A driver and a storage a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The forced driver; `None` leaves the configuration's (`auto`: io_uring, else epoll).
    pub driver: Option<Driver>,
    /// The storage.
    pub storage: Storage,
}

thread_local! {
    static CURRENT: Cell<Backend> = const { Cell::new(Backend::DEFAULT) };
}

/// This thread's backend: the one [`Backend::run`] is running a test on, else
/// [`Backend::DEFAULT`].
pub fn current() -> Backend {
    CURRENT.with(Cell::get)
}

impl Backend {
    /// What a test not run through [`Backend::run`] gets: the configured driver, SQLite.
    pub const DEFAULT: Backend = Backend {
        driver: None,
        storage: Storage::Sqlite,
    };

    /// io_uring, SQLite.
    pub fn io_uring() -> Backend {
        Backend {
            driver: Some(Driver::IoUring),
            storage: Storage::Sqlite,
        }
    }

    /// epoll, SQLite.
    pub fn epoll() -> Backend {
        Backend {
            driver: Some(Driver::Epoll),
            storage: Storage::Sqlite,
        }
    }

    /// io_uring, PostgreSQL.
    pub fn io_uring_postgres() -> Backend {
        Backend {
            driver: Some(Driver::IoUring),
            storage: Storage::Postgres,
        }
    }

    /// epoll, PostgreSQL.
    pub fn epoll_postgres() -> Backend {
        Backend {
            driver: Some(Driver::Epoll),
            storage: Storage::Postgres,
        }
    }

    /// Runs `test` with this backend as the thread's [`current`] one (restored afterwards,
    /// also when `test` panics).
    pub fn run(self, test: fn()) {
        struct Restore(Backend);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| current.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|current| current.replace(self)));
        test();
    }

    /// A name for messages and for values a test must keep apart between backends that run at
    /// the same time in one process (e.g. request ids in a captured log): `epoll`,
    /// `io_uring_postgres`, `default`, ...
    pub fn name(&self) -> &'static str {
        match (self.driver, self.storage) {
            (None, Storage::Sqlite) => "default",
            (None, Storage::Postgres) => "postgres",
            (Some(Driver::Epoll), Storage::Sqlite) => "epoll",
            (Some(Driver::IoUring), Storage::Sqlite) => "io_uring",
            (Some(Driver::Epoll), Storage::Postgres) => "epoll_postgres",
            (Some(Driver::IoUring), Storage::Postgres) => "io_uring_postgres",
        }
    }

    /// The `runtime.driver=...` setting, when the driver is forced.
    pub fn driver_setting(&self) -> Option<&'static str> {
        self.driver.map(|driver| match driver {
            Driver::IoUring => "runtime.driver=io_uring",
            Driver::Epoll => "runtime.driver=epoll",
        })
    }

    /// A new, empty PostgreSQL database's URL when the storage is PostgreSQL (one per call,
    /// as every server a test starts on SQLite gets its own directory); `None` for SQLite.
    pub fn database_url(&self) -> Option<String> {
        match self.storage {
            Storage::Sqlite => None,
            Storage::Postgres => Some(crate::postgres::fresh_database_url()),
        }
    }
}
