//! The harness itself: `#[backends(...)]` runs the function once per backend with that backend
//! current, and the shared PostgreSQL gives every caller its own database.

use sdsim_testing::backend::current;
use sdsim_testing::postgres::{column, fresh_database_url};
use sdsim_testing::{Backend, Driver, Storage};

#[sdsim_testing::backends(epoll, io_uring_postgres)]
fn each_generated_test_runs_on_its_own_backend() {
    let backend = current();
    assert_ne!(backend, Backend::DEFAULT, "run outside Backend::run");
    match backend.name() {
        "epoll" => {
            assert_eq!(backend.driver, Some(Driver::Epoll));
            assert_eq!(backend.database_url(), None);
        }
        "io_uring_postgres" => {
            assert_eq!(backend.driver, Some(Driver::IoUring));
            assert_eq!(backend.storage, Storage::Postgres);
            assert!(backend.database_url().unwrap().starts_with("postgres://"));
        }
        other => panic!("a backend the attribute did not list: {other}"),
    }
}

#[test]
fn outside_a_backend_run_the_default_applies_and_a_panic_restores_it() {
    assert_eq!(current(), Backend::DEFAULT);
    assert_eq!(current().driver_setting(), None);
    let panicked = std::panic::catch_unwind(|| {
        Backend::epoll().run(|| panic!("a failing test"));
    });
    assert!(panicked.is_err());
    assert_eq!(current(), Backend::DEFAULT);
}

#[test]
fn every_fresh_database_is_a_different_empty_database() {
    let (one, two) = (fresh_database_url(), fresh_database_url());
    assert_ne!(one, two);
    for url in [&one, &two] {
        let name = url.rsplit('/').next().unwrap();
        assert_eq!(column(url, "SELECT current_database()"), vec![name]);
        assert_eq!(
            column(
                url,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ),
            vec!["0"]
        );
    }
    column(&one, "CREATE TABLE only_in_one (x int)");
    assert_eq!(
        column(
            &two,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'only_in_one'"
        ),
        vec!["0"]
    );
}
