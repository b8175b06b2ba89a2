//! Loading: defaults, then the file, then `SDSIM__SECTION__KEY` variables, then `--set` flags.

use serde::de::DeserializeOwned;
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

/// Loads a configuration: defaults, then `file` (if any), then `overrides` in order. Unknown
/// keys and wrong types are errors naming the key. Does not validate.
pub fn load<T: DeserializeOwned>(
    file: Option<&str>,
    overrides: &Overrides,
) -> Result<T, ConfigError> {
    let text = match file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_string(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    load_text(file.zip(text.as_deref()), overrides)
}

/// [`load`] with the file already read: `file` is its name (for errors) and text. The fuzz
/// targets call it, so what they check is what `sdsim` does with a file.
pub fn load_text<T: DeserializeOwned>(
    file: Option<(&str, &str)>,
    overrides: &Overrides,
) -> Result<T, ConfigError> {
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
    from_table(root)
}

/// Parses a whole configuration from TOML text (defaults fill what is missing).
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let table = text.parse::<Table>().map_err(|e| ConfigError::Syntax {
        path: "(text)".into(),
        reason: e.to_string(),
    })?;
    from_table(table)
}

fn from_table<T: DeserializeOwned>(table: Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        // The path names the offending key, an unknown one included.
        let key = e.path().to_string();
        let reason = e.into_inner().to_string();
        ConfigError::Key { key, reason }
    })
}

impl fmt::Display for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value, source) in &self.entries {
            writeln!(f, "{key} = {value} ({source})")?;
        }
        Ok(())
    }
}
