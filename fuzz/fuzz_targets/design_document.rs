//! Design documents (what `POST /api/projects`, `PUT /api/projects/{id}` and
//! `POST /api/simulations/validate` accept): arbitrary text must yield a design or a list of
//! problems each with a JSON path, never a panic; what the project service stores must parse
//! again to the same design; the version diff must take any pair.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sdsim_simulation::design::parse(text) {
        Ok(design) => {
            let stored = sdsim_projects::projects::check_design(text).expect("a valid design is stored");
            assert_eq!(sdsim_simulation::design::parse(&stored).ok(), Some(design));
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            assert!(problems.iter().all(|p| p.path.starts_with('$')));
            assert!(sdsim_projects::projects::check_design(text).is_err());
        }
    }
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = text.split_at(mid);
    let _ = sdsim_projects::projects::diff_components(a, b);
});
