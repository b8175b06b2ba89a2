//! Replays every file of `fuzz/corpus/<target>/` through its target's checks: what a fuzz run
//! found once stays checked by the normal (stable) test suite.

use sdsim_fuzz_checks::alloc::CountingAllocator;
use sdsim_fuzz_checks::TARGETS;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_corpus_file_passes_its_targets_checks() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target.name);
        let files = names_in(&dir);
        assert!(!files.is_empty(), "{} has no corpus", target.name);
        for name in files {
            let path = dir.join(&name);
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let check = target.check;
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}/{name}: {why}", target.name));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every target has its libFuzzer binary and its corpus, and nothing else is in `fuzz/`.
#[test]
fn targets_binaries_and_corpora_are_the_same_list() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    let binaries: BTreeSet<String> = names_in(&fuzz_dir().join("fuzz_targets"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    let corpora = names_in(&fuzz_dir().join("corpus"));
    assert_eq!(binaries, targets, "fuzz/fuzz_targets/*.rs");
    assert_eq!(corpora, targets, "fuzz/corpus/*");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let readme = std::fs::read_to_string(fuzz_dir().join("README.md")).expect("fuzz/README.md");
    for name in &targets {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is not a [[bin]] of fuzz/Cargo.toml"
        );
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "{name} is not in the table of fuzz/README.md"
        );
    }
}
