//! Prometheus text and the servicegraph import (`sdsim_engine::import`): what
//! `sdsim design import --from otel-servicegraph` reads.

use sdsim_engine::import::prometheus::{self, Exposition};
use sdsim_engine::import::{otel_servicegraph, ImportError, ImportOptions};

/// `servicegraph_metrics`: arbitrary text is an exposition or refused naming a line of the
/// text; an accepted exposition written out again reads back to the same samples and types;
/// the import gives a design whose document the engine parses to that same design, or an
/// error whose line (when it names one) is a line of the text.
pub fn servicegraph_metrics(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match prometheus::parse(text) {
        Err(e) => assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line),
        Ok(exposition) => {
            let again = prometheus::parse(&write(&exposition)).expect("written text reads back");
            assert_eq!(again.types, exposition.types);
            assert_eq!(again.samples.len(), exposition.samples.len());
            for (a, b) in again.samples.iter().zip(&exposition.samples) {
                assert_eq!((&a.name, &a.labels), (&b.name, &b.labels));
                assert!(
                    a.value.to_bits() == b.value.to_bits()
                        || (a.value.is_nan() && b.value.is_nan())
                );
                assert_eq!(a.timestamp_ms, b.timestamp_ms);
            }
        }
    }
    match otel_servicegraph(text, &ImportOptions::new(60.0)) {
        Ok(imported) => {
            let design = sdsim_engine::design::parse(&imported.document)
                .expect("an imported document is a valid design");
            assert_eq!(design, imported.design);
        }
        Err(ImportError::Parse(e)) => assert!(e.line <= lines),
        Err(
            ImportError::MissingLabel { line, .. }
            | ImportError::BadCount { line, .. }
            | ImportError::BadHistogram { line, .. }
            | ImportError::MissingLatency { line, .. },
        ) => assert!(line >= 1 && line <= lines, "line {line} of {lines}"),
        Err(_) => {}
    }
}

/// The exposition as text again: types first, then every sample (no help lines).
fn write(e: &Exposition) -> String {
    let mut out = String::new();
    let mut types: Vec<_> = e.types.iter().collect();
    types.sort_by(|a, b| a.0.cmp(b.0));
    for (name, kind) in types {
        out.push_str(&format!("# TYPE {name} {kind}\n"));
    }
    for s in &e.samples {
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", prometheus::escape_label_value(v)))
            .collect();
        let value = if s.value.is_nan() {
            "NaN".to_string()
        } else if s.value == f64::INFINITY {
            "+Inf".to_string()
        } else if s.value == f64::NEG_INFINITY {
            "-Inf".to_string()
        } else {
            format!("{:?}", s.value)
        };
        out.push_str(&format!("{}{{{}}} {value}", s.name, labels.join(",")));
        if let Some(t) = s.timestamp_ms {
            out.push_str(&format!(" {t}"));
        }
        out.push('\n');
    }
    out
}
