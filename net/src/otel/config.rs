//! `[otel]`: OpenTelemetry tracing, off by default, and the standard `OTEL_*` environment
//! variables that override it.

use super::sampler::Sampler;
use sdsim_core::config::Problems;
use serde::{Deserialize, Serialize};

/// `[otel]`: OpenTelemetry tracing (spans exported over OTLP/HTTP protobuf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelConfig {
    /// Whether spans are recorded and exported (`OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` turns it on, `OTEL_SDK_DISABLED=true` off).
    pub enabled: bool,
    /// The OTLP/HTTP receiver: a base URL (`http://collector:4318`, spans go to
    /// `{endpoint}/v1/traces`), or the whole URL when it ends in `/v1/traces`. Plain `http://`.
    pub endpoint: String,
    /// `service.name` of every span (`OTEL_SERVICE_NAME`); empty: `sdsim-<roles>`, e.g.
    /// `sdsim-gateway-auth`.
    pub service_name: String,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off` or `parentbased_traceidratio` (`OTEL_TRACES_SAMPLER`).
    pub sampler: String,
    /// The ratio of the `traceidratio` samplers, 0 to 1 (`OTEL_TRACES_SAMPLER_ARG`).
    pub sampler_arg: f64,
    /// Finished spans waiting for the exporter thread; beyond this new spans are dropped and
    /// counted (`sdsim_otel_spans_dropped_total`), so that a shard never waits on export.
    pub queue_spans: usize,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            enabled: false,
            endpoint: "http://localhost:4318".into(),
            service_name: String::new(),
            sampler: "parentbased_always_on".into(),
            sampler_arg: 1.0,
            queue_spans: 2048,
        }
    }
}

impl OtelConfig {
    /// Reports every problem, naming its key.
    pub fn validate(&self, problems: &mut Problems) {
        if let Err(e) = Sampler::new(&self.sampler, self.sampler_arg) {
            match e {
                super::sampler::BadSampler::Name => {
                    problems.bad("otel.sampler", self.sampler.clone(), &e.to_string())
                }
                super::sampler::BadSampler::Ratio => problems.bad(
                    "otel.sampler_arg",
                    self.sampler_arg.to_string(),
                    &e.to_string(),
                ),
            }
        }
        problems.at_least("otel.queue_spans", self.queue_spans, 1);
        let rest = self.endpoint.strip_prefix("http://");
        if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
            problems.bad_url(
                "otel.endpoint",
                &self.endpoint,
                "must be an http:// URL with a host (OTLP/HTTP; https is not supported)",
            );
        }
    }

    /// The sampler (valid once [`OtelConfig::validate`] passed; `parentbased_always_on`
    /// otherwise).
    pub fn sampler(&self) -> Sampler {
        Sampler::new(&self.sampler, self.sampler_arg).unwrap_or_else(|_| {
            Sampler::new("parentbased_always_on", 1.0).expect("a known sampler")
        })
    }

    /// Where spans are posted.
    pub fn traces_url(&self) -> String {
        let endpoint = self.endpoint.trim_end_matches('/');
        if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        }
    }

    /// The service name: `service_name`, or `sdsim-` and the roles.
    pub fn service_name_for(&self, roles: &[String]) -> String {
        if self.service_name.is_empty() {
            format!("sdsim-{}", roles.join("-"))
        } else {
            self.service_name.clone()
        }
    }
}

/// The `--set`-style overrides (`otel.key=value`) the standard OpenTelemetry variables among
/// `vars` ask for, in the order they apply.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let vars: std::collections::HashMap<String, String> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("OTEL_"))
        .collect();
    let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = Vec::new();
    // The traces-specific endpoint wins over the general one, as the specification says.
    if let Some(url) =
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    {
        out.push("otel.enabled=true".to_owned());
        out.push(format!("otel.endpoint={}", quoted(url)));
    }
    if let Some(name) = get("OTEL_SERVICE_NAME") {
        out.push(format!("otel.service_name={}", quoted(name)));
    }
    if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
        out.push(format!("otel.sampler={}", quoted(sampler)));
    }
    if let Some(ratio) = get("OTEL_TRACES_SAMPLER_ARG") {
        // A number stays a number; anything else is a string the section refuses by name.
        out.push(format!("otel.sampler_arg={ratio}"));
    }
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        out.push("otel.enabled=false".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_standard_variables_become_otel_keys() {
        let out = env_overrides(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "edge \"1\""),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("SDSIM__OTEL__ENABLED", "false"),
        ]));
        assert_eq!(
            out,
            [
                "otel.enabled=true",
                "otel.endpoint=\"http://collector:4318\"",
                "otel.service_name=\"edge \\\"1\\\"\"",
                "otel.sampler=\"traceidratio\"",
                "otel.sampler_arg=0.25",
            ]
        );
        let traces = env_overrides(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://b:4318/v1/traces",
            ),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]));
        assert_eq!(
            traces,
            [
                "otel.enabled=true",
                "otel.endpoint=\"http://b:4318/v1/traces\"",
                "otel.enabled=false"
            ]
        );
        assert!(env_overrides(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).is_empty());
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = OtelConfig {
            sampler: "sometimes".into(),
            queue_spans: 0,
            endpoint: "https://collector:4318".into(),
            ..OtelConfig::default()
        };
        let mut problems = Problems::new();
        cfg.validate(&mut problems);
        let text: Vec<String> = problems
            .into_result()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(text[0].contains("otel.sampler") && text[0].contains("sometimes"));
        assert!(text[1].contains("otel.queue_spans"));
        assert!(text[2].contains("otel.endpoint"));
        cfg = OtelConfig {
            sampler: "traceidratio".into(),
            sampler_arg: 2.0,
            ..OtelConfig::default()
        };
        let mut problems = Problems::new();
        cfg.validate(&mut problems);
        let text = problems.into_result().unwrap_err()[0].to_string();
        assert!(text.contains("otel.sampler_arg"), "{text}");
        assert_eq!(cfg.traces_url(), "http://localhost:4318/v1/traces");
        cfg.endpoint = "http://c:1/v1/traces/".into();
        assert_eq!(cfg.traces_url(), "http://c:1/v1/traces");
        assert_eq!(
            cfg.service_name_for(&["gateway".into(), "auth".into()]),
            "sdsim-gateway-auth"
        );
    }
}
