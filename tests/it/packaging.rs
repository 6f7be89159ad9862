//! What an operator installs beside the binary holds up: the LICENSE matches Cargo.toml's
//! `license`; `examples/switchyard.toml` loads through the real configuration loader with its
//! secrets from the environment (and without them names the missing key); the systemd unit
//! `examples/switchyard.service` reloads with SIGHUP, starts the gateway with that config, and
//! passes `systemd-analyze verify` with nothing to say.

use std::path::Path;
use std::process::Output;

use switchyard::config::{Config, ConfigError, LogFormat, Overrides};

use crate::harness::{PROMPTLY, scratch_dir};
use crate::readme::BINARY;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Where the unit expects the installed binary.
const INSTALLED_BINARY: &str = "/usr/local/bin/switchyard";

fn read(path: &str) -> String {
    let path = Path::new(MANIFEST_DIR).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_license_is_the_mit_license_cargo_toml_names() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    assert_eq!(manifest["package"]["license"].as_str(), Some("MIT"));
    let license = read("LICENSE");
    assert!(license.starts_with("MIT License\n"), "{license}");
    assert!(
        license.contains("switchyard contributors"),
        "the copyright holder: {license}"
    );
    assert!(
        license.contains("Permission is hereby granted, free of charge"),
        "{license}"
    );
}

fn production_secrets() -> Vec<(String, String)> {
    [
        (
            "SWITCHYARD_AUTH_JWT_SECRET",
            "a-long-random-jwt-secret-for-the-test",
        ),
        (
            "SWITCHYARD_AUTH_PRODUCER_TOKENS",
            r#"{ backend = "a-long-random-producer-token" }"#,
        ),
        (
            "SWITCHYARD_AUTH_ADMIN_TOKENS",
            r#"{ ops = "a-long-random-admin-token" }"#,
        ),
    ]
    .into_iter()
    .map(|(var, value)| (var.to_owned(), value.to_owned()))
    .collect()
}

#[test]
fn the_example_config_loads_with_secrets_from_the_environment() {
    let overrides = Overrides {
        config_file: Some(Path::new(MANIFEST_DIR).join("examples/switchyard.toml")),
        ..Default::default()
    };
    let config = Config::load_from(&overrides, production_secrets()).expect("the example loads");
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert!(config.server.admin_listen.ip().is_loopback());
    assert_eq!(
        config.server.flags_path,
        Path::new("/var/lib/switchyard/flags.toml")
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert!(!config.admin.allow_fault_injection);
    assert_eq!(config.auth.producer_tokens.len(), 1);
    assert_eq!(config.auth.admin_tokens.len(), 1);
    assert!(!config.dev);

    // The file holds no secret: without the environment the loader refuses, naming the key.
    let error = Config::load_from(&overrides, Vec::new()).unwrap_err();
    assert!(
        matches!(error, ConfigError::MissingSecret { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("auth.jwt_secret"), "{error}");
}

/// The unit's `Key=value` lines, in order.
fn unit_entries(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .collect()
}

async fn systemd_analyze_verify(unit: &Path) -> Output {
    let output = tokio::time::timeout(
        PROMPTLY,
        tokio::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(unit)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("systemd-analyze finishes promptly");
    output.unwrap_or_else(|error| {
        panic!(
            "cannot run systemd-analyze ({error}); install it with scripts/install-test-deps.sh \
             (Debian package systemd)"
        )
    })
}

#[tokio::test]
async fn the_systemd_unit_reloads_with_sighup_and_passes_systemd_analyze_verify() {
    let unit = read("examples/switchyard.service");
    let entries = unit_entries(&unit);
    let value = |key: &str| -> &str {
        entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(
        value("ExecStart"),
        format!("{INSTALLED_BINARY} serve --config /etc/switchyard/switchyard.toml")
    );
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("RestartPreventExitStatus"), "64");

    // `verify` insists that ExecStart's binary exists, and a test installs nothing: the one
    // change to the unit is the binary's path, to the binary under test.
    let dir = scratch_dir();
    let checked = dir.join("switchyard.service");
    std::fs::write(&checked, unit.replace(INSTALLED_BINARY, BINARY)).unwrap();
    let output = systemd_analyze_verify(&checked).await;
    assert!(output.status.success(), "{output:?}");
    // It reports what it ignores (unknown keys, bad values) but still exits 0: nothing to say.
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "systemd-analyze verify has remarks:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The same check does speak up about a broken copy.
    let broken = dir.join("broken.service");
    std::fs::write(
        &broken,
        unit.replace(INSTALLED_BINARY, BINARY)
            .replace("Restart=on-failure", "Restart=sometimes"),
    )
    .unwrap();
    let output = systemd_analyze_verify(&broken).await;
    let remarks = String::from_utf8_lossy(&output.stderr);
    assert!(remarks.contains("sometimes"), "{output:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
