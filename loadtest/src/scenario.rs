//! Scenario files (TOML): a target, the load shape, and open-loop phases (constant rates and
//! linear ramps, back to back, with exact boundaries). Unknown keys are errors that name the key.

use crate::run::{build_request, HttpLoad, Phase};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What to load.
    pub target: Target,
    /// How many connections on which CPUs.
    #[serde(default)]
    pub load: LoadShape,
    /// Open-loop phases; none = a closed-loop run of `load.duration`.
    #[serde(default)]
    pub phases: Vec<PhaseSpec>,
}

/// `[target]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port/path`
    pub url: String,
    /// HTTP method.
    #[serde(default = "get")]
    pub method: String,
    /// Extra headers, `"Name: value"`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Request body.
    #[serde(default)]
    pub body: String,
}

fn get() -> String {
    "GET".into()
}

/// `[load]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadShape {
    /// Connections in total.
    pub connections: usize,
    /// CPUs for the generator's threads.
    pub cpus: Vec<usize>,
    /// Unmeasured warm-up.
    pub warmup: String,
    /// Measured duration of a closed-loop run (phases set their own).
    pub duration: String,
    /// Interval of the progress line and the series.
    pub interval: String,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            connections: 50,
            cpus: vec![0],
            warmup: "2s".into(),
            duration: "10s".into(),
            interval: "1s".into(),
        }
    }
}

/// `[[phases]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// How long, e.g. `"30s"`.
    pub duration: String,
    /// Requests per second (at the start, for a ramp).
    pub rate: f64,
    /// Requests per second at the end: a linear ramp.
    pub ramp_to: Option<f64>,
}

/// Parses "500ms", "10s", "2m" or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (500ms, 10s, 2m)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in `{text}` (ms, s, m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Scenario {
    /// Parses and checks a scenario; errors name the key.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        for (key, value) in [
            ("load.warmup", &scenario.load.warmup),
            ("load.duration", &scenario.load.duration),
            ("load.interval", &scenario.load.interval),
        ] {
            parse_duration(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        }
        if scenario.load.connections == 0 {
            anyhow::bail!("load.connections: must be at least 1");
        }
        if scenario.load.cpus.is_empty() {
            anyhow::bail!("load.cpus: name at least one CPU");
        }
        for (i, p) in scenario.phases.iter().enumerate() {
            let d = parse_duration(&p.duration)
                .map_err(|e| anyhow::anyhow!("phases[{i}].duration: {e}"))?;
            if d.is_zero() {
                anyhow::bail!("phases[{i}].duration: must be positive");
            }
            if !(p.rate > 0.0 && p.rate.is_finite())
                || p.ramp_to.is_some_and(|r| !(r > 0.0 && r.is_finite()))
            {
                anyhow::bail!("phases[{i}]: rate and ramp_to must be positive");
            }
        }
        Ok(scenario)
    }

    /// The run this scenario describes against `addr`.
    pub fn load(&self, addr: SocketAddr, authority: &str, path: &str) -> anyhow::Result<HttpLoad> {
        let d = |s: &str| parse_duration(s).map_err(|e| anyhow::anyhow!(e));
        let phases: Vec<Phase> = self
            .phases
            .iter()
            .map(|p| {
                Ok(Phase {
                    duration: d(&p.duration)?,
                    rate: p.rate,
                    ramp_to: p.ramp_to,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let duration = if phases.is_empty() {
            d(&self.load.duration)?
        } else {
            phases.iter().map(|p| p.duration).sum()
        };
        let t = &self.target;
        Ok(HttpLoad {
            addr,
            request: build_request(&t.method, authority, path, &t.headers, t.body.as_bytes()),
            connections: self.load.connections,
            rate: None,
            duration,
            warmup: d(&self.load.warmup)?,
            cpus: self.load.cpus.clone(),
            interval: d(&self.load.interval)?,
            phases,
            protocol: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phases_and_names_bad_keys() {
        let s = Scenario::parse(
            r#"
            [target]
            url = "http://127.0.0.1:8000/health"
            [load]
            connections = 10
            cpus = [1]
            [[phases]]
            duration = "10s"
            rate = 100
            [[phases]]
            duration = "20s"
            rate = 100
            ramp_to = 500
            "#,
        )
        .unwrap();
        let load = s
            .load(
                "127.0.0.1:8000".parse().unwrap(),
                "127.0.0.1:8000",
                "/health",
            )
            .unwrap();
        assert_eq!(load.duration, Duration::from_secs(30));
        assert_eq!(load.rate_at(5.0), Some(100.0));
        assert_eq!(load.rate_at(20.0), Some(300.0));
        assert_eq!(load.rate_at(99.0), Some(500.0));
        let err =
            Scenario::parse("[target]\nurl = \"http://x\"\n[load]\nconections = 3\n").unwrap_err();
        assert!(err.to_string().contains("conections"), "{err}");
        let err = Scenario::parse(
            "[target]\nurl = \"http://x\"\n[[phases]]\nduration = \"1h\"\nrate = 5\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("phases[0].duration"), "{err}");
    }
}
