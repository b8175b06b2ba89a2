//! Loading: defaults, then the file, then `SDSIM__SECTION__KEY` variables, then `--set` flags.

use super::Config;
use std::fmt;
use toml::{Table, Value};

/// Why a configuration could not be loaded or is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// An override is not of the form `section.key=value`.
    #[error("override `{text}` from {source_name} is not of the form section.key=value")]
    BadOverride {
        /// The override as given.
        text: String,
        /// `--set` or the environment variable's name.
        source_name: String,
    },
    /// A key does not exist or its value has the wrong type.
    #[error("config key `{key}`: {reason}")]
    Key {
        /// The dotted key, e.g. `ratelimit.burst`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The value parses but is not acceptable.
    #[error("config key `{key}` = {value}: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The bad value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// `key=value` overrides gathered from the environment and the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: Vec<(String, String, String)>,
}

impl Overrides {
    /// Adds one `--set section.key=value`.
    pub fn set(&mut self, text: &str) -> Result<(), ConfigError> {
        self.push(text, "--set")
    }

    /// Adds every `SDSIM__SECTION__KEY=value` variable of `vars` (e.g. `std::env::vars()`).
    pub fn from_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix("SDSIM__")?;
                Some((
                    name.clone(),
                    format!("{}={value}", rest.to_ascii_lowercase().replace("__", ".")),
                ))
            })
            .collect();
        found.sort();
        for (name, text) in found {
            self.push(&text, &name)?;
        }
        Ok(())
    }

    fn push(&mut self, text: &str, source: &str) -> Result<(), ConfigError> {
        let bad = || ConfigError::BadOverride {
            text: text.to_string(),
            source_name: source.to_string(),
        };
        let (key, value) = text.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.is_empty()) {
            return Err(bad());
        }
        self.entries.push((
            key.to_string(),
            value.trim().to_string(),
            source.to_string(),
        ));
        Ok(())
    }
}

/// Reads a value the way TOML would (`2`, `false`, `[0, 1]`, `"x"`), or as a bare string.
fn parse_value(text: &str) -> Value {
    let doc = format!("v = {text}");
    match doc.parse::<Table>() {
        Ok(mut table) => table.remove("v").unwrap_or(Value::String(text.to_string())),
        Err(_) => Value::String(text.to_string()),
    }
}

fn apply(root: &mut Table, key: &str, value: Value) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut table = root;
    let mut walked = String::new();
    for part in parts {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Key {
                    key: key.to_string(),
                    reason: format!("`{walked}` is a value, not a section"),
                })
            }
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `overrides` in order.
    /// Unknown keys and wrong types are errors naming the key. Does not call [`Config::validate`].
    pub fn load(file: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        Self::load_text(file.zip(text.as_deref()), overrides)
    }

    /// [`Config::load`] with the file already read: `file` is its name (for errors) and text.
    /// The fuzz targets call it, so what they check is what `sdsim` does with a file.
    pub fn load_text(
        file: Option<(&str, &str)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut root = match file {
            Some((path, text)) => text.parse::<Table>().map_err(|e| ConfigError::Syntax {
                path: path.to_string(),
                reason: e.to_string(),
            })?,
            None => Table::new(),
        };
        for (key, value, _source) in &overrides.entries {
            apply(&mut root, key, parse_value(value))?;
        }
        Self::from_table(root)
    }

    /// Parses a whole configuration from TOML text (defaults fill what is missing).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = text.parse::<Table>().map_err(|e| ConfigError::Syntax {
            path: "(text)".into(),
            reason: e.to_string(),
        })?;
        Self::from_table(table)
    }

    fn from_table(table: Table) -> Result<Config, ConfigError> {
        serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            // The path names the offending key, an unknown one included.
            let key = e.path().to_string();
            let reason = e.into_inner().to_string();
            ConfigError::Key { key, reason }
        })
    }
}

impl fmt::Display for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value, source) in &self.entries {
            writeln!(f, "{key} = {value} ({source})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(sets: &[&str]) -> Result<Config, ConfigError> {
        let mut o = Overrides::default();
        for s in sets {
            o.set(s)?;
        }
        Config::load(None, &o)
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.gateway.listen, "0.0.0.0:8000");
        assert_eq!(c.ratelimit.burst, 200);
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(load(&[]).unwrap(), c);
    }

    #[test]
    fn set_overrides_parse_types() {
        let c = load(&[
            "runtime.shards=2",
            "runtime.cpus=[0, 1]",
            "ratelimit.enabled=false",
            "gateway.listen=127.0.0.1:9999",
            "server.shutdown_timeout=2s",
        ])
        .unwrap();
        assert_eq!(c.runtime.shards, 2);
        assert_eq!(c.runtime.cpus, vec![0, 1]);
        assert!(!c.ratelimit.enabled);
        assert_eq!(c.gateway.listen, "127.0.0.1:9999");
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
    }

    #[test]
    fn env_overrides_and_set_wins() {
        let mut o = Overrides::default();
        o.from_env(vec![
            ("SDSIM__RATELIMIT__BURST".to_string(), "7".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .unwrap();
        o.set("ratelimit.burst=9").unwrap();
        assert_eq!(Config::load(None, &o).unwrap().ratelimit.burst, 9);
    }

    #[test]
    fn unknown_keys_name_the_key() {
        let err = load(&["ratelimit.brust=5"]).unwrap_err();
        match err {
            ConfigError::Key { key, .. } => assert_eq!(key, "ratelimit.brust"),
            other => panic!("unexpected {other:?}"),
        }
        let err = load(&["nosuch.key=1"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::Key { ref key, .. } if key == "nosuch"),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = load(&["runtime.shards=lots"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::Key { ref key, .. } if key == "runtime.shards"),
            "{err:?}"
        );
        let err = load(&["http.idle_timeout=soon"]).unwrap_err();
        assert!(err.to_string().contains("http.idle_timeout"), "{err}");
    }

    #[test]
    fn malformed_overrides_are_rejected() {
        let mut o = Overrides::default();
        assert!(matches!(
            o.set("noequals"),
            Err(ConfigError::BadOverride { .. })
        ));
        assert!(matches!(
            o.set("a..b=1"),
            Err(ConfigError::BadOverride { .. })
        ));
        assert!(matches!(o.set("=1"), Err(ConfigError::BadOverride { .. })));
    }

    #[test]
    fn validate_lists_every_problem_by_key() {
        let c = load(&[
            "gateway.listen=nowhere",
            "ratelimit.burst=0",
            "compression.gzip_level=12",
            "tls.cert=/x.pem",
            "roles=[\"gateway\", \"mailer\"]",
        ])
        .unwrap();
        let keys: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "roles",
                "gateway.listen",
                "ratelimit.burst",
                "compression.gzip_level",
                "tls.key"
            ]
        );
    }

    #[test]
    fn bounds_on_waits_and_sizes_name_their_keys() {
        let c = load(&[
            "runtime.blocking_queue=0",
            "http.handler_timeout=0s",
            "simulation.max_design_bytes=10",
            "simulation.stop_timeout=0s",
            "grpc.max_header_list_bytes=100",
            "grpc.max_frame_bytes=1000",
        ])
        .unwrap();
        let mut problems: Vec<(String, String)> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| match e {
                ConfigError::Invalid { key, reason, .. } => (key, reason),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        problems.sort();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "grpc.max_frame_bytes",
                "grpc.max_header_list_bytes",
                "http.handler_timeout",
                "runtime.blocking_queue",
                "simulation.max_design_bytes",
                "simulation.stop_timeout",
            ]
        );
        assert!(problems[0].1.contains("16384"), "{problems:?}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(
            Config::from_toml("[runtime\nshards=1"),
            Err(ConfigError::Syntax { .. })
        ));
    }
}

#[cfg(test)]
mod default_file {
    use super::super::Config;

    /// config/default.toml must load, list the defaults exactly, and stay valid.
    #[test]
    fn default_toml_matches_the_built_in_defaults() {
        let text = include_str!("../../../config/default.toml");
        let parsed = Config::from_toml(text).expect("config/default.toml parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("defaults are valid");
    }
}
