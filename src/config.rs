//! Process configuration: embedded defaults, an optional TOML file, `SWITCHYARD_<SECTION>_<KEY>`
//! environment overrides and command-line flags, merged in that order and validated once.
//!
//! This module does not read `flags.toml`; routing flags change at runtime and live elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod backplane;
pub use backplane::{BackplaneConfig, BackplaneKind};

/// The embedded defaults, also printed by `switchyard defaults`.
pub const DEFAULTS_TOML: &str = include_str!("config/defaults.toml");

const ENV_PREFIX: &str = "SWITCHYARD_";

/// A validated process configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub limits: Limits,
    pub log: LogConfig,
    pub backplane: BackplaneConfig,
    /// Development mode: `?user_id=` accepted without a token, loopback only.
    pub dev: bool,
}

/// How the gateway writes its log lines to stderr.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `[log] format`: `text` for a person at a terminal, `json` (one object a line) for a log
/// collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub flags_path: PathBuf,
    /// `flags_path` is dev mode's own file for this run, in a fresh temporary directory: chosen
    /// because neither `--flags`, the config file nor the environment named one, so that
    /// `serve --dev` never edits a `flags.toml` it happens to find (the repository's own
    /// example among them).
    pub flags_path_is_dev_scratch: bool,
    pub shutdown_grace: Duration,
    /// Benchmark ablation: every event takes its route's pre-migration path, with no flag
    /// decision and no shadow. Never for production.
    pub bypass_routing: bool,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 secret for client JWTs; empty means HS256 tokens are not accepted.
    pub jwt_secret: String,
    /// PEM public key for RS256 or ES256 client tokens.
    pub jwt_public_key_pem: Option<Vec<u8>>,
    /// Producer token name → secret.
    pub producer_tokens: BTreeMap<String, String>,
    /// Admin token name → secret.
    pub admin_tokens: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub allow_fault_injection: bool,
}

/// Resource limits; every one has a default in `config/defaults.toml`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub send_queue_bytes: usize,
    pub write_timeout: Duration,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
    pub max_client_message_bytes: usize,
    pub offline_queue_len: usize,
    pub offline_ttl: Duration,
    pub offline_total_bytes: usize,
    pub shadow_queue_len: usize,
    pub heartbeat_interval: Duration,
    pub idle_timeout: Duration,
    /// Open HTTP connections on the public listener (WebSockets count once upgraded against
    /// `max_connections` instead).
    pub max_http_connections: usize,
    /// Open HTTP connections on the admin listener.
    pub max_admin_http_connections: usize,
    /// How long a request head may take to arrive; hyper restarts this clock whenever a
    /// keep-alive connection goes idle, so it is also the keep-alive idle timeout.
    pub http_header_read_timeout: Duration,
    /// How long a request body may take to arrive whole, from the end of its head.
    pub http_body_timeout: Duration,
}

impl Limits {
    /// Largest producer request body: one event plus room for the envelope around it.
    pub fn max_body_bytes(&self) -> usize {
        self.max_event_bytes + 8 * 1024
    }
}

/// What the command line may override; `None` keeps the merged value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub dev: bool,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub flags_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(
        "no {what} configured; set {key} in the config file or {env}, or run `switchyard serve --dev` for local development"
    )]
    MissingSecret {
        what: &'static str,
        key: &'static str,
        env: &'static str,
    },
    #[error(
        "--dev refuses to listen on non-loopback address {addr}: dev mode accepts unauthenticated clients"
    )]
    DevNonLoopback { addr: SocketAddr },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    auth: RawAuth,
    admin: RawAdmin,
    limits: RawLimits,
    log: RawLog,
    backplane: backplane::RawBackplane,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    admin_listen: String,
    flags_path: PathBuf,
    shutdown_grace_ms: u64,
    bypass_routing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    jwt_secret: String,
    jwt_public_key_path: String,
    producer_tokens: BTreeMap<String, String>,
    admin_tokens: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    allow_fault_injection: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_event_bytes: usize,
    max_batch_events: usize,
    max_batch_bytes: usize,
    max_connections: usize,
    max_connections_per_user: usize,
    send_queue_bytes: usize,
    write_timeout_ms: u64,
    ws_read_buffer_bytes: usize,
    ws_write_buffer_bytes: usize,
    max_client_message_bytes: usize,
    offline_queue_len: usize,
    offline_ttl_ms: u64,
    offline_total_bytes: usize,
    shadow_queue_len: usize,
    heartbeat_interval_ms: u64,
    idle_timeout_ms: u64,
    max_http_connections: usize,
    max_admin_http_connections: usize,
    http_header_read_timeout_ms: u64,
    http_body_timeout_ms: u64,
}

impl Config {
    /// Loads the configuration from the embedded defaults, the file named in `overrides` (if any),
    /// the process environment and `overrides`.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(overrides, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULTS_TOML, "defaults")?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut flags_path_named = overrides.flags_path.is_some()
            || env
                .iter()
                .any(|(var, _)| var == "SWITCHYARD_SERVER_FLAGS_PATH");
        if let Some(path) = &overrides.config_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file = parse_table(&text, &path.display().to_string())?;
            flags_path_named |= file
                .get("server")
                .and_then(|server| server.get("flags_path"))
                .is_some();
            merge(&mut table, file);
        }
        apply_env(&mut table, env)?;
        let raw: RawConfig =
            table
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Parse {
                    origin: overrides
                        .config_file
                        .as_deref()
                        .map_or_else(|| "merged".to_owned(), |p| p.display().to_string()),
                    message: error.message().to_owned(),
                })?;
        let mut config = Config::from_raw(raw, overrides)?;
        if config.dev && !flags_path_named {
            config.server.flags_path = dev_flags_path();
            config.server.flags_path_is_dev_scratch = true;
        }
        Ok(config)
    }

    fn from_raw(raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let listen = match overrides.listen {
            Some(addr) => addr,
            None => parse_addr("server.listen", &raw.server.listen)?,
        };
        let admin_listen = match overrides.admin_listen {
            Some(addr) => addr,
            None => parse_addr("server.admin_listen", &raw.server.admin_listen)?,
        };
        let jwt_public_key_pem = if raw.auth.jwt_public_key_path.is_empty() {
            None
        } else {
            let path = PathBuf::from(&raw.auth.jwt_public_key_path);
            Some(std::fs::read(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?)
        };
        let limits = Limits::from_raw(raw.limits)?;
        let mut config = Config {
            server: ServerConfig {
                listen,
                admin_listen,
                flags_path: overrides
                    .flags_path
                    .clone()
                    .unwrap_or(raw.server.flags_path),
                flags_path_is_dev_scratch: false,
                shutdown_grace: Duration::from_millis(raw.server.shutdown_grace_ms),
                bypass_routing: raw.server.bypass_routing,
            },
            auth: AuthConfig {
                jwt_secret: raw.auth.jwt_secret,
                jwt_public_key_pem,
                producer_tokens: raw.auth.producer_tokens,
                admin_tokens: raw.auth.admin_tokens,
            },
            admin: AdminConfig {
                allow_fault_injection: raw.admin.allow_fault_injection,
            },
            limits,
            log: LogConfig {
                format: raw.log.format,
            },
            backplane: BackplaneConfig::from_raw(raw.backplane)?,
            dev: overrides.dev,
        };
        for (key, tokens) in [
            ("auth.producer_tokens", &config.auth.producer_tokens),
            ("auth.admin_tokens", &config.auth.admin_tokens),
        ] {
            if let Some((name, _)) = tokens.iter().find(|(_, secret)| secret.len() < 16) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("token {name:?} is shorter than 16 characters"),
                });
            }
        }
        if config.dev {
            config.fill_dev_secrets()?;
        } else {
            config.require_secrets()?;
        }
        Ok(config)
    }

    /// Dev mode binds loopback only and invents the producer and admin tokens it lacks.
    fn fill_dev_secrets(&mut self) -> Result<(), ConfigError> {
        for addr in [self.server.listen, self.server.admin_listen] {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::DevNonLoopback { addr });
            }
        }
        if self.auth.producer_tokens.is_empty() {
            self.auth
                .producer_tokens
                .insert("dev".to_owned(), random_token("sy_prod_"));
        }
        if self.auth.admin_tokens.is_empty() {
            self.auth
                .admin_tokens
                .insert("dev".to_owned(), random_token("sy_admin_"));
        }
        Ok(())
    }

    fn require_secrets(&self) -> Result<(), ConfigError> {
        if self.auth.jwt_secret.is_empty() && self.auth.jwt_public_key_pem.is_none() {
            return Err(ConfigError::MissingSecret {
                what: "client JWT key",
                key: "auth.jwt_secret (or auth.jwt_public_key_path)",
                env: "SWITCHYARD_AUTH_JWT_SECRET",
            });
        }
        if self.auth.producer_tokens.is_empty() {
            return Err(ConfigError::MissingSecret {
                what: "producer token",
                key: "auth.producer_tokens",
                env: "SWITCHYARD_AUTH_PRODUCER_TOKENS='{ backend = \"...\" }'",
            });
        }
        if self.auth.admin_tokens.is_empty() {
            return Err(ConfigError::MissingSecret {
                what: "admin token",
                key: "auth.admin_tokens",
                env: "SWITCHYARD_AUTH_ADMIN_TOKENS='{ ops = \"...\" }'",
            });
        }
        Ok(())
    }
}

impl Limits {
    fn from_raw(raw: RawLimits) -> Result<Limits, ConfigError> {
        fn positive(key: &'static str, value: u64) -> Result<u64, ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".to_owned(),
                });
            }
            Ok(value)
        }
        let ms = |key, value| positive(key, value).map(Duration::from_millis);
        let size = |key, value: usize| positive(key, value as u64).map(|v| v as usize);
        let limits = Limits {
            max_event_bytes: size("limits.max_event_bytes", raw.max_event_bytes)?,
            max_batch_events: size("limits.max_batch_events", raw.max_batch_events)?,
            max_batch_bytes: size("limits.max_batch_bytes", raw.max_batch_bytes)?,
            max_connections: size("limits.max_connections", raw.max_connections)?,
            max_connections_per_user: size(
                "limits.max_connections_per_user",
                raw.max_connections_per_user,
            )?,
            send_queue_bytes: size("limits.send_queue_bytes", raw.send_queue_bytes)?,
            write_timeout: ms("limits.write_timeout_ms", raw.write_timeout_ms)?,
            ws_read_buffer_bytes: size("limits.ws_read_buffer_bytes", raw.ws_read_buffer_bytes)?,
            ws_write_buffer_bytes: size("limits.ws_write_buffer_bytes", raw.ws_write_buffer_bytes)?,
            max_client_message_bytes: size(
                "limits.max_client_message_bytes",
                raw.max_client_message_bytes,
            )?,
            offline_queue_len: raw.offline_queue_len,
            offline_ttl: ms("limits.offline_ttl_ms", raw.offline_ttl_ms)?,
            offline_total_bytes: raw.offline_total_bytes,
            shadow_queue_len: size("limits.shadow_queue_len", raw.shadow_queue_len)?,
            heartbeat_interval: ms("limits.heartbeat_interval_ms", raw.heartbeat_interval_ms)?,
            idle_timeout: ms("limits.idle_timeout_ms", raw.idle_timeout_ms)?,
            max_http_connections: size("limits.max_http_connections", raw.max_http_connections)?,
            max_admin_http_connections: size(
                "limits.max_admin_http_connections",
                raw.max_admin_http_connections,
            )?,
            http_header_read_timeout: ms(
                "limits.http_header_read_timeout_ms",
                raw.http_header_read_timeout_ms,
            )?,
            http_body_timeout: ms("limits.http_body_timeout_ms", raw.http_body_timeout_ms)?,
        };
        if limits.idle_timeout <= limits.heartbeat_interval {
            return Err(ConfigError::Invalid {
                key: "limits.idle_timeout_ms",
                message:
                    "must be longer than limits.heartbeat_interval_ms, or every client looks idle"
                        .to_owned(),
            });
        }
        Ok(limits)
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|error| ConfigError::Invalid {
        key,
        message: format!("{value:?} is not an address like 127.0.0.1:8080: {error}"),
    })
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            message: error.to_string(),
        })
}

/// Merges `over` into `base`, one level of sections deep; a key in `over` replaces the same key.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_section)), toml::Value::Table(section)) => {
                for (inner_key, inner_value) in section {
                    base_section.insert(inner_key, inner_value);
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `SWITCHYARD_<SECTION>_<KEY>` variables. The value is read as a TOML value when it
/// parses as one (numbers, booleans, inline tables) and as a string otherwise.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        // Section names hold no underscore, so the first one separates section from key.
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let Some(toml::Value::Table(section_table)) = table.get_mut(section) else {
            continue;
        };
        let Some(existing) = section_table.get(key) else {
            return Err(ConfigError::Env {
                var,
                message: format!("[{section}] has no key {key:?}"),
            });
        };
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"));
        let new_value = match (existing, parsed) {
            (toml::Value::String(_), _) | (_, None) => toml::Value::String(value),
            (_, Some(parsed)) => parsed,
        };
        section_table.insert(key.to_owned(), new_value);
    }
    Ok(())
}

/// Dev mode's flags file when none is named: `flags.toml` in a directory of its own under the
/// system's temporary directory, new for each process, so concurrent dev gateways never share
/// one and the working directory's files are never touched.
fn dev_flags_path() -> PathBuf {
    std::env::temp_dir()
        .join(format!("switchyard-dev-{}", std::process::id()))
        .join("flags.toml")
}

/// A random token of 32 hex digits after `prefix`, from the OS's random source.
pub(crate) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    // The OS random source failing is not something a gateway can run without.
    getrandom::fill(&mut bytes).expect("operating system random source unavailable");
    let mut token = String::with_capacity(prefix.len() + 32);
    token.push_str(prefix);
    for byte in bytes {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three secrets a gateway outside dev mode needs, from the environment.
    const SECRETS: [(&str, &str); 3] = [
        ("SWITCHYARD_AUTH_JWT_SECRET", "0123456789abcdef0123"),
        (
            "SWITCHYARD_AUTH_PRODUCER_TOKENS",
            r#"{ backend = "producer-secret-0123456789" }"#,
        ),
        (
            "SWITCHYARD_AUTH_ADMIN_TOKENS",
            r#"{ ops = "admin-secret-0123456789" }"#,
        ),
    ];

    fn load(overrides: &Overrides, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_from(
            overrides,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn dev_mode_invents_tokens_and_uses_defaults() {
        let config = load(
            &Overrides {
                dev: true,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(config.auth.producer_tokens["dev"].starts_with("sy_prod_"));
        assert!(config.auth.admin_tokens["dev"].starts_with("sy_admin_"));
        assert_eq!(config.limits.max_event_bytes, 65536);
        assert_eq!(config.limits.ws_read_buffer_bytes, 4096);
    }

    #[test]
    fn dev_mode_uses_a_flags_file_of_its_own_unless_one_is_named() {
        let dev = Overrides {
            dev: true,
            ..Default::default()
        };
        let config = load(&dev, &[]).unwrap();
        assert!(config.server.flags_path_is_dev_scratch);
        assert!(config.server.flags_path.starts_with(std::env::temp_dir()));
        assert_ne!(config.server.flags_path, PathBuf::from("flags.toml"));
        let named = load(&dev, &[("SWITCHYARD_SERVER_FLAGS_PATH", "mine.toml")]).unwrap();
        assert_eq!(named.server.flags_path, PathBuf::from("mine.toml"));
        assert!(!named.server.flags_path_is_dev_scratch);
        let on_the_command_line = load(
            &Overrides {
                flags_path: Some("cli.toml".into()),
                ..dev.clone()
            },
            &[],
        )
        .unwrap();
        assert_eq!(
            on_the_command_line.server.flags_path,
            PathBuf::from("cli.toml")
        );
        // Without --dev the configured path stands, the working directory's flags.toml.
        let production = load(&Overrides::default(), &SECRETS).unwrap();
        assert_eq!(production.server.flags_path, PathBuf::from("flags.toml"));
        assert_eq!(production.log.format, LogFormat::Text);
    }

    #[test]
    fn log_format_is_text_or_json() {
        let dev = Overrides {
            dev: true,
            ..Default::default()
        };
        let json = load(&dev, &[("SWITCHYARD_LOG_FORMAT", "json")]).unwrap();
        assert_eq!(json.log.format, LogFormat::Json);
        let error = load(&dev, &[("SWITCHYARD_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(error.to_string().contains("xml"), "{error}");
    }

    #[test]
    fn missing_secrets_outside_dev_is_an_error_naming_the_key() {
        let error = load(&Overrides::default(), &[]).unwrap_err();
        assert!(matches!(error, ConfigError::MissingSecret { .. }));
        assert!(error.to_string().contains("auth.jwt_secret"), "{error}");
    }

    #[test]
    fn environment_overrides_defaults_with_typed_values() {
        let config = load(
            &Overrides::default(),
            &[
                SECRETS.as_slice(),
                &[
                    ("SWITCHYARD_LIMITS_MAX_CONNECTIONS_PER_USER", "3"),
                    ("SWITCHYARD_SERVER_LISTEN", "127.0.0.1:0"),
                ],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(config.limits.max_connections_per_user, 3);
        assert_eq!(config.server.listen.port(), 0);
        assert_eq!(
            config.auth.producer_tokens["backend"],
            "producer-secret-0123456789"
        );
    }

    #[test]
    fn unknown_environment_key_is_an_error() {
        let error = load(
            &Overrides {
                dev: true,
                ..Default::default()
            },
            &[("SWITCHYARD_LIMITS_MAX_BANANAS", "3")],
        )
        .unwrap_err();
        assert!(error.to_string().contains("max_bananas"), "{error}");
    }

    #[test]
    fn dev_refuses_non_loopback() {
        let error = load(
            &Overrides {
                dev: true,
                listen: Some("0.0.0.0:8080".parse().unwrap()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(error, ConfigError::DevNonLoopback { .. }),
            "{error}"
        );
    }

    #[test]
    fn config_file_with_unknown_key_is_rejected() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[limits]\nmax_frobs = 1\n").unwrap();
        let error = load(
            &Overrides {
                dev: true,
                config_file: Some(path.clone()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(error.to_string().contains("max_frobs"), "{error}");
    }

    #[test]
    fn http_limits_have_their_defaults_and_refuse_zero() {
        let dev = Overrides {
            dev: true,
            ..Default::default()
        };
        let limits = load(&dev, &[]).unwrap().limits;
        assert_eq!(limits.max_http_connections, 4096);
        assert_eq!(limits.max_admin_http_connections, 64);
        assert_eq!(limits.http_header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.http_body_timeout, Duration::from_secs(30));
        for var in [
            "SWITCHYARD_LIMITS_MAX_HTTP_CONNECTIONS",
            "SWITCHYARD_LIMITS_MAX_ADMIN_HTTP_CONNECTIONS",
            "SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS",
            "SWITCHYARD_LIMITS_HTTP_BODY_TIMEOUT_MS",
        ] {
            let error = load(&dev, &[(var, "0")]).unwrap_err();
            let key = var
                .trim_start_matches("SWITCHYARD_LIMITS_")
                .to_ascii_lowercase();
            assert!(error.to_string().contains(&key), "{var}: {error}");
        }
    }

    #[test]
    fn short_tokens_are_rejected() {
        let error = load(
            &Overrides {
                dev: true,
                ..Default::default()
            },
            &[(
                "SWITCHYARD_AUTH_PRODUCER_TOKENS",
                r#"{ backend = "short" }"#,
            )],
        )
        .unwrap_err();
        assert!(error.to_string().contains("shorter than 16"), "{error}");
    }
}
