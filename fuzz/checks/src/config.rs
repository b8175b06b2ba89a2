//! The configuration (`sdsim_server::config`, its sections in the crates that own them): a
//! TOML file, `SDSIM__SECTION__KEY` variables and `--set section.key=value` flags, loaded and
//! validated as `sdsim` does at start.

use sdsim_core::config::{ConfigError, Overrides};
use sdsim_server::config::Config;
use toml::{Table, Value};

/// The input split the way `sdsim` receives it: lines starting with `--set ` are flags,
/// lines starting with `SDSIM__` are environment variables (`NAME=value`), the rest is the file.
struct Input<'a> {
    file: String,
    env: Vec<(String, String)>,
    sets: Vec<&'a str>,
}

fn split(text: &str) -> Input<'_> {
    let mut input = Input {
        file: String::new(),
        env: Vec::new(),
        sets: Vec::new(),
    };
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if let Some(set) = bare.strip_prefix("--set ") {
            input.sets.push(set);
        } else if bare.starts_with("SDSIM__") {
            let (name, value) = bare.split_once('=').unwrap_or((bare, ""));
            input.env.push((name.to_string(), value.to_string()));
        } else {
            input.file.push_str(line);
        }
    }
    input
}

/// The first part of a dotted key (`ratelimit` of `ratelimit.tiers[0].limit`).
fn section(key: &str) -> &str {
    key.split(['.', '[']).next().unwrap_or(key)
}

/// `config_file`: every rejection names what is wrong (the file with the parser's position, the
/// override as given, or the key, which the input contains or the configuration has); every
/// problem `validate` finds names a key of the configuration; a valid configuration printed as
/// `sdsim config` prints it loads back to the same value, and so does the same configuration
/// given entirely as `--set` flags.
pub fn file(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let input = split(text);
    let mut overrides = Overrides::default();
    if let Err(e) = overrides.from_env(input.env.clone()) {
        assert!(matches!(e, ConfigError::BadOverride { .. }), "{e:?}");
        return;
    }
    for set in &input.sets {
        if let Err(e) = overrides.set(set) {
            match &e {
                ConfigError::BadOverride { text, .. } => assert_eq!(text, set),
                other => panic!("--set {set}: unexpected {other:?}"),
            }
            assert!(e.to_string().contains(set), "{e}");
            return;
        }
    }
    let config = match Config::load_text(Some(("fuzz.toml", &input.file)), &overrides) {
        Ok(config) => config,
        Err(e) => return rejected(&input, e),
    };
    let known: Table = Value::try_from(Config::default())
        .ok()
        .and_then(|v| v.as_table().cloned())
        .expect("the defaults serialise to a table");
    match config.validate() {
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                let ConfigError::Invalid { key, .. } = p else {
                    panic!("validate returned {p:?}");
                };
                assert!(known.contains_key(section(key)), "{key} is not a key");
                assert!(p.to_string().contains(key.as_str()), "{p}");
            }
        }
        Ok(()) => round_trips(&config),
    }
}

fn rejected(input: &Input<'_>, e: ConfigError) {
    match &e {
        ConfigError::Syntax { path, reason } => {
            assert_eq!(path, "fuzz.toml");
            assert!(
                input.file.parse::<Table>().is_err(),
                "valid TOML rejected: {reason}"
            );
            assert!(reason.contains("line"), "no position in {reason}");
        }
        ConfigError::Key { key, .. } => {
            // The key is one the user wrote, or a section of the configuration it is under.
            let written = input.file.parse::<Table>().unwrap_or_default();
            let overridden = input
                .sets
                .iter()
                .filter_map(|s| s.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .chain(
                    input
                        .env
                        .iter()
                        .filter_map(|(n, _)| n.strip_prefix("SDSIM__"))
                        .map(|n| n.to_ascii_lowercase().replace("__", ".").trim().to_string()),
                );
            let first = section(key);
            let named =
                written.contains_key(first) || overridden.into_iter().any(|k| section(&k) == first);
            // (`""` is a TOML key too: the error then names the empty key.)
            assert!(named, "error names `{key}`: {e}");
            assert!(e.to_string().contains(key.as_str()), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn round_trips(config: &Config) {
    let printed = toml::to_string_pretty(config).expect("a valid configuration prints");
    let again = Config::from_toml(&printed).expect("the printed configuration loads");
    assert_eq!(&again, config, "`sdsim config` printed:\n{printed}");
    let Value::Table(table) = Value::try_from(config).expect("serialises") else {
        panic!("a configuration is a table");
    };
    let mut flags = Vec::new();
    flatten("", &table, &mut flags);
    let mut overrides = Overrides::default();
    for flag in &flags {
        overrides.set(flag).expect("a printed key is a valid --set");
    }
    let set = Config::load_text(None, &overrides)
        .unwrap_or_else(|e| panic!("the same configuration as --set flags: {e}\n{flags:#?}"));
    assert_eq!(&set, config, "as --set flags: {flags:#?}");
}

/// `section.key=value` for every value (arrays written whole, as TOML).
fn flatten(prefix: &str, table: &Table, out: &mut Vec<String>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) => flatten(&key, inner, out),
            value => out.push(format!("{key}={value}")),
        }
    }
}
