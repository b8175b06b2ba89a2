//! The composed configuration: loading with overrides, validation naming every key, and
//! `config/default.toml` equal to the built-in defaults.

use super::Config;
use sdsim_core::config::{ConfigError, Overrides};
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

/// config/default.toml must load, list the defaults exactly, and stay valid.
#[test]
fn default_toml_matches_the_built_in_defaults() {
    let text = include_str!("../../../../config/default.toml");
    let parsed = Config::from_toml(text).expect("config/default.toml parses");
    assert_eq!(parsed, Config::default());
    parsed.validate().expect("defaults are valid");
}

/// `rediss://` passed one check and failed the next with a second message about the same key
/// (and the client has no TLS); URLs are quoted without their password.
#[test]
fn storage_and_redis_urls_are_refused_once_with_their_reason_and_no_password() {
    let refusal = |setting: &str| -> (String, String, String) {
        let errors = load(&[setting]).unwrap().validate().unwrap_err();
        assert_eq!(errors.len(), 1, "{setting}: {errors:?}");
        match errors.into_iter().next().unwrap() {
            ConfigError::Invalid { key, value, reason } => (key, value, reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    let (key, value, reason) = refusal("redis.url=rediss://:s3cret@cache:6380");
    assert_eq!(key, "redis.url");
    assert_eq!(value, "rediss://***@cache:6380");
    assert!(
        reason.contains("TLS (rediss://) is not supported"),
        "{reason}"
    );
    let (_, value, reason) = refusal("redis.url=http://u:s3cret@cache");
    assert_eq!(value, "http://***@cache");
    assert_eq!(reason, "must start with redis://");
    let (_, _, reason) = refusal("redis.url=redis://cache:port");
    assert!(reason.starts_with("not a Redis URL"), "{reason}");
    let (key, value, _) = refusal("storage.url=mysql://root:s3cret@db/sdsim");
    assert_eq!(key, "storage.url");
    assert_eq!(value, "mysql://***@db/sdsim");
    for fine in [
        "redis.url=redis://:pw@127.0.0.1:6379/2",
        "redis.url=redis://cache",
    ] {
        // The default listeners bind 0.0.0.0: with Redis, peers need the advertised address.
        load(&[fine, "registry.advertise_host=10.0.0.7"])
            .unwrap()
            .validate()
            .unwrap();
    }
}

/// The service addresses take one address, a comma-separated list or an array; a bad entry
/// is named with its key; the lists fill the directory for the roles this process lacks.
#[test]
fn service_address_lists_load_validate_and_fill_the_directory() {
    use sdsim_mesh::{Directory, Service};
    let two = ["10.0.0.1:10000", "10.0.0.2:10000"];
    for set in [
        "gateway.project_service=10.0.0.1:10000,10.0.0.2:10000",
        r#"gateway.project_service=["10.0.0.1:10000", " 10.0.0.2:10000"]"#,
    ] {
        let c = load(&[set]).unwrap();
        assert_eq!(c.gateway.project_service.0, two, "{set}");
    }
    let errors = load(&["gateway.simulation_service=10.0.0.1:11000, nonsense"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains("gateway.simulation_service") && text.contains("nonsense"),
        "{text}"
    );

    let gateway_only = load(&[
        r#"roles=["gateway", "auth"]"#,
        "gateway.project_service=10.0.0.1:10000,10.0.0.2:10000",
    ])
    .unwrap();
    let directory = Directory::new();
    crate::role::fill_static(&directory, &gateway_only);
    let ids: Vec<String> = directory
        .instances(Service::Project)
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(ids, two);
    assert_eq!(directory.instances(Service::Simulation).len(), 1);
    assert!(
        directory.instances(Service::Auth).is_empty(),
        "auth runs here"
    );

    let all_roles = Directory::new();
    crate::role::fill_static(&all_roles, &Config::default());
    assert!(all_roles.instances(Service::Project).is_empty());
}

#[test]
fn mesh_settings_are_validated_with_their_key() {
    let errors = load(&["mesh.pool_max=2"]).unwrap().validate().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("mesh.pool_max"),
        "{errors:?}"
    );
}
