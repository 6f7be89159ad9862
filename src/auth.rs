//! Who may do what: client JWTs for `/ws`, named bearer tokens for producers and admins.
//!
//! Client tokens are verified before any upgrade. HS256 uses the configured secret; RS256 or
//! ES256 use the configured public key. The algorithm a token may use is fixed by the key that
//! verifies it, so `none` and algorithm-confusion tokens are refused. Named tokens are compared
//! in constant time and the *name* is what the rest of the gateway sees.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::labels::AuthFailure;

/// The subprotocol prefix that carries a client token (`jwt.<base64url(token)>`), as the legacy
/// browser client sends it.
pub(crate) const JWT_SUBPROTOCOL_PREFIX: &str = "jwt.";

/// Allowed clock skew when checking `exp`.
const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.jwt_public_key_path: not an RSA or EC public key in PEM form: {0}")]
    PublicKey(jsonwebtoken::errors::Error),
}

/// A verified client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientIdentity {
    pub(crate) user_id: String,
    /// When the token stops being valid, as seconds since the Unix epoch; `None` in dev mode.
    pub(crate) expires_at: Option<u64>,
}

impl ClientIdentity {
    /// How long until the token expires, from now.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let expires_at = Duration::from_secs(self.expires_at?);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Some(expires_at.saturating_sub(now))
    }
}

/// Checks client JWTs and named tokens.
pub(crate) struct Authenticator {
    hs256: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    producer_tokens: Vec<(String, String)>,
    admin_tokens: Vec<(String, String)>,
    dev: bool,
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig, dev: bool) -> Result<Authenticator, AuthSetupError> {
        let hs256 = (!config.jwt_secret.is_empty())
            .then(|| DecodingKey::from_secret(config.jwt_secret.as_bytes()));
        let public = match &config.jwt_public_key_pem {
            None => None,
            Some(pem) => Some(match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(_) => (
                    DecodingKey::from_ec_pem(pem).map_err(AuthSetupError::PublicKey)?,
                    Algorithm::ES256,
                ),
            }),
        };
        let named = |tokens: &std::collections::BTreeMap<String, String>| {
            tokens
                .iter()
                .map(|(name, secret)| (name.clone(), secret.clone()))
                .collect()
        };
        Ok(Authenticator {
            hs256,
            public,
            producer_tokens: named(&config.producer_tokens),
            admin_tokens: named(&config.admin_tokens),
            dev,
        })
    }

    /// Whether `?user_id=` without a token is accepted (dev mode only).
    pub(crate) fn allows_anonymous(&self) -> bool {
        self.dev
    }

    /// Verifies a client JWT: signature, algorithm, `exp` (required) and `sub` (the user id).
    pub(crate) fn verify_client(&self, token: &str) -> Result<ClientIdentity, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthFailure::WrongAlgorithm
            }
            // `alg: none` and other algorithms the library does not know fail as bad JSON;
            // a readable header with an `alg` is an algorithm we refuse, not garbage.
            _ if header_names_an_algorithm(token) => AuthFailure::WrongAlgorithm,
            _ => AuthFailure::Malformed,
        })?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (self.hs256.as_ref(), Algorithm::HS256),
            alg => match &self.public {
                Some((key, public_alg)) if *public_alg == alg => (Some(key), alg),
                _ => (None, alg),
            },
        };
        let Some(key) = key else {
            return Err(AuthFailure::WrongAlgorithm);
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Claims are read as a plain map so that a missing or mistyped claim reaches the
        // library's claim validation (invalid_claims) instead of failing as bad JSON.
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map_err(
            |error| match error.kind() {
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm => AuthFailure::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::InvalidSubject
                | ErrorKind::InvalidIssuer
                | ErrorKind::InvalidAudience => AuthFailure::InvalidClaims,
                _ => AuthFailure::Malformed,
            },
        )?;
        // The library does not look at `iat`; a token issued in the future is as suspect as one
        // not valid yet (a skewed or forged issuer clock).
        match data.claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_f64() {
                Some(iat) if iat > (unix_seconds() + LEEWAY_SECONDS) as f64 => {
                    return Err(AuthFailure::NotYetValid);
                }
                Some(_) => {}
                None => return Err(AuthFailure::InvalidClaims),
            },
        }
        let sub = data.claims.get("sub").and_then(Value::as_str);
        let exp = data.claims.get("exp").and_then(Value::as_u64);
        match (sub, exp) {
            (Some(sub), Some(exp)) if !sub.is_empty() => Ok(ClientIdentity {
                user_id: client_user_id(sub)?.to_owned(),
                expires_at: Some(exp),
            }),
            _ => Err(AuthFailure::InvalidClaims),
        }
    }

    /// The name of the producer whose token is in `authorization`.
    pub(crate) fn producer(&self, authorization: Option<&str>) -> Result<&str, AuthFailure> {
        find_named(
            &self.producer_tokens,
            authorization,
            AuthFailure::UnknownProducerToken,
        )
    }

    /// The name of the admin whose token is in `authorization`.
    pub(crate) fn admin(&self, authorization: Option<&str>) -> Result<&str, AuthFailure> {
        find_named(
            &self.admin_tokens,
            authorization,
            AuthFailure::UnknownAdminToken,
        )
    }
}

/// A client's user id, held to the producers' rule (README.md, Endpoints) without trimming: the one check
/// for a token's `sub` and dev mode's `?user_id=`.
pub(crate) fn client_user_id(raw: &str) -> Result<&str, AuthFailure> {
    crate::paths::ssot::validate_client_user_id(raw).map_err(|_| AuthFailure::InvalidUserId)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token in an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client token carried in a `jwt.<base64url(token)>` subprotocol, with the subprotocol
/// itself (to echo back).
pub(crate) fn token_from_subprotocols(header: &str) -> Option<(String, &str)> {
    header.split(',').map(str::trim).find_map(|protocol| {
        let encoded = protocol.strip_prefix(JWT_SUBPROTOCOL_PREFIX)?;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .ok()?;
        Some((String::from_utf8(decoded).ok()?, protocol))
    })
}

fn find_named<'a>(
    tokens: &'a [(String, String)],
    authorization: Option<&str>,
    unknown: AuthFailure,
) -> Result<&'a str, AuthFailure> {
    let presented = authorization
        .and_then(bearer)
        .ok_or(AuthFailure::MissingToken)?;
    // Compare against every token so the time taken does not say which one nearly matched.
    let mut found = None;
    for (name, secret) in tokens {
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            secret.as_bytes(),
            presented.as_bytes(),
        )) {
            found = Some(name.as_str());
        }
    }
    found.ok_or(unknown)
}

/// Whether the token's first segment is a JSON object with a string `alg`.
fn header_names_an_algorithm(token: &str) -> bool {
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|header| header.get("alg").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn subprotocol_token_is_decoded_and_echoed() {
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("a.b.c");
        let header = format!("chat, jwt.{encoded}");
        let (token, protocol) = token_from_subprotocols(&header).unwrap();
        assert_eq!(token, "a.b.c");
        assert_eq!(protocol, format!("jwt.{encoded}"));
        assert_eq!(token_from_subprotocols("chat, jwt.***"), None);
    }

    #[test]
    fn named_tokens_match_whole_values_only() {
        let tokens = [("ops".to_owned(), "secret".to_owned())];
        let unknown = AuthFailure::UnknownProducerToken;
        let find = |header| find_named(&tokens, Some(header), unknown);
        assert_eq!(find("Bearer secret"), Ok("ops"));
        for near_miss in ["Bearer secreT", "Bearer secrets", "Bearer secre"] {
            assert_eq!(find(near_miss), Err(unknown), "{near_miss}");
        }
    }
}
