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

/// `whatif_changes`: any text as the `changes` of `PATCH /api/simulations/{id}` against a
/// running `three-tier.json`: refused with every problem at a path under `$.changes`, or
/// accepted changes that read back equal from their JSON, apply to the running simulation, and
/// let it run on.
pub fn whatif_changes(data: &[u8]) {
    use sdsim_engine::engine::changes::{parse_changes, Change};
    let Some(text) = crate::text(data) else {
        return;
    };
    let Ok(list) = sonic_rs::from_str::<sonic_rs::Value>(text) else {
        return;
    };
    let mut design =
        sdsim_engine::design::parse(include_str!("../../../config/designs/three-tier.json"))
            .expect("the template parses");
    design.duration = 30.0;
    match parse_changes(&list, &design, "$.changes") {
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(p.path.starts_with("$.changes"), "{}: {}", p.path, p.message);
            }
        }
        Ok(changes) => {
            let mut sim = sdsim_engine::engine::Simulation::new(design);
            sim.advance_to(1.0);
            for change in &changes {
                let json = sonic_rs::to_value(change).expect("a change serialises");
                let back = Change::from_json(&json, "$").expect("a change reads back");
                assert_eq!(&back, change);
                sim.apply(change)
                    .expect("an accepted change applies to a running run");
            }
            sim.advance_to(2.0);
        }
    }
}
