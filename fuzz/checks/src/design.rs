//! Design documents: what `POST /api/projects`, `PUT /api/projects/{id}` and
//! `POST /api/simulations/validate` accept (`sdsim_engine::design`,
//! `sdsim_projects::projects::check_design`).

/// `design_document`: arbitrary text yields a design or a list of problems each with a JSON
/// path; the project service stores exactly what the engine accepts, and what it stores parses
/// again to the same design; the version diff takes any pair of texts and finds no change
/// between a text and itself.
pub fn document(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    match sdsim_engine::design::parse(text) {
        Ok(design) => {
            let stored =
                sdsim_projects::projects::check_design(text).expect("a valid design is stored");
            assert_eq!(sdsim_engine::design::parse(&stored).ok(), Some(design));
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
    assert_eq!(
        sdsim_projects::projects::diff_components(text, text),
        Default::default(),
        "a design differs from itself"
    );
}
