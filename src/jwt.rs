//! JSON Web Tokens (`serve --auth jwt`): tokens an identity provider signs,
//! with what the bearer may use in the token itself.
//!
//! Keys: an HS256 secret (`--jwt-secret-file`), an RSA or EC public key in PEM
//! (`--jwt-public-key`: RS256 or ES256), or a JWKS file (`--jwt-jwks-file`,
//! chosen by the token's `kid`). The algorithm is the key's, never the
//! token's say-so: a token whose header names another (`none` included) is
//! refused. `exp` and `sub` are required; `nbf`, and `aud` and `iss` when the
//! server names them (`--jwt-audience`, `--jwt-issuer`), are checked, with
//! `--jwt-leeway-s` of clock skew either way.
//!
//! Entitlements ride in claims, as keys have them: `tw_symbols` (patterns),
//! `tw_channels` (quotes, trades, book, candles, history, replay) and
//! `tw_max_subscriptions`, and `tw_max_connections` (counted per subject,
//! across all its tokens); absent, everything.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::keys::{Entitlements, KeyError};

/// The most clock skew a server may allow, in seconds.
pub const MAX_LEEWAY_S: u64 = 300;

/// Why a token, or the server's JWT settings, were refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {detail}")]
    BadKey { path: String, detail: String },
    #[error("--auth jwt needs one of --jwt-secret-file, --jwt-public-key, --jwt-jwks-file")]
    NoKey,
    #[error("--jwt-leeway-s may be at most {MAX_LEEWAY_S}")]
    Leeway,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token's entitlements: {0}")]
    Entitlements(#[from] KeyError),
}

/// What verifies tokens: the keys and the claims to check.
pub struct JwtVerifier {
    keys: Keys,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_s: u64,
}

enum Keys {
    /// One key, with the one algorithm it is used with.
    Single(Box<DecodingKey>, Algorithm),
    /// Chosen by `kid`.
    Set(JwkSet),
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("audience", &self.audience).field("issuer", &self.issuer).finish()
    }
}

/// The settings `serve` takes.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings<'a> {
    pub secret_file: Option<&'a Path>,
    pub public_key: Option<&'a Path>,
    pub jwks_file: Option<&'a Path>,
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub leeway_s: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    tw_symbols: Option<Vec<String>>,
    #[serde(default)]
    tw_channels: Option<Vec<String>>,
    #[serde(default)]
    tw_max_subscriptions: Option<u32>,
    /// Connections all of the subject's tokens may hold at once.
    #[serde(default)]
    tw_max_connections: Option<u32>,
}

/// A token that passed: who, what they may use, and until when.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: String,
    pub entitlements: Entitlements,
    /// `exp`, in nanoseconds since the epoch.
    pub expires_ns: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|source| JwtError::Read { path: path.display().to_string(), source })
}

/// Whether a presented credential has a JWT's shape (three base64url parts,
/// a JSON header): `eyJ….….…`.
pub fn is_jwt(presented: &str) -> bool {
    presented.starts_with("eyJ") && presented.matches('.').count() == 2
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings<'_>) -> Result<JwtVerifier, JwtError> {
        if settings.leeway_s > MAX_LEEWAY_S {
            return Err(JwtError::Leeway);
        }
        let bad = |path: &Path, detail: String| JwtError::BadKey { path: path.display().to_string(), detail };
        let keys = if let Some(path) = settings.secret_file {
            let secret = read(path)?;
            let secret = secret.trim_ascii();
            if secret.len() < 32 {
                return Err(bad(path, "an HS256 secret needs at least 32 bytes".into()));
            }
            Keys::Single(Box::new(DecodingKey::from_secret(secret)), Algorithm::HS256)
        } else if let Some(path) = settings.public_key {
            let pem = read(path)?;
            match (DecodingKey::from_rsa_pem(&pem), DecodingKey::from_ec_pem(&pem)) {
                (Ok(key), _) => Keys::Single(Box::new(key), Algorithm::RS256),
                (_, Ok(key)) => Keys::Single(Box::new(key), Algorithm::ES256),
                (Err(e), _) => return Err(bad(path, format!("not an RSA or EC public key in PEM: {e}"))),
            }
        } else if let Some(path) = settings.jwks_file {
            let set: JwkSet =
                serde_json::from_slice(&read(path)?).map_err(|e| bad(path, format!("not a JWKS document: {e}")))?;
            if set.keys.is_empty() {
                return Err(bad(path, "holds no key".into()));
            }
            Keys::Set(set)
        } else {
            return Err(JwtError::NoKey);
        };
        Ok(JwtVerifier {
            keys,
            audience: settings.audience.map(str::to_owned),
            issuer: settings.issuer.map(str::to_owned),
            leeway_s: settings.leeway_s,
        })
    }

    /// Checks `token`: signature, algorithm, `exp`, `nbf`, `aud`, `iss`.
    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let invalid = |e: jsonwebtoken::errors::Error| JwtError::Invalid(e.to_string());
        let header = decode_header(token).map_err(invalid)?;
        let (key, algorithm) = match &self.keys {
            Keys::Single(key, algorithm) => (std::borrow::Cow::Borrowed(&**key), *algorithm),
            Keys::Set(set) => {
                let kid = header.kid.as_deref().ok_or_else(|| JwtError::Invalid("the token names no kid".into()))?;
                let jwk = set.find(kid).ok_or_else(|| JwtError::Invalid(format!("no key {kid:?} in the JWKS")))?;
                let algorithm = match jwk.common.key_algorithm {
                    // The key's own `alg` (its Debug form is the JOSE name).
                    Some(named) => format!("{named:?}").parse::<Algorithm>().map_err(invalid)?,
                    None => header.alg, // checked against the key's family by decode
                };
                if !matches!(algorithm, Algorithm::RS256 | Algorithm::ES256 | Algorithm::HS256) {
                    return Err(JwtError::Invalid(format!("algorithm {algorithm:?} is not accepted")));
                }
                (std::borrow::Cow::Owned(DecodingKey::from_jwk(jwk).map_err(invalid)?), algorithm)
            }
        };
        if header.alg != algorithm {
            return Err(JwtError::Invalid(format!("signed with {:?}; this server takes {algorithm:?}", header.alg)));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        }
        let claims = decode::<Claims>(token, &key, &validation).map_err(invalid)?.claims;
        let entitlements = Entitlements::parse(
            claims.tw_symbols.map(|s| s.join(",")).as_deref(),
            claims.tw_channels.map(|c| c.join(",")).as_deref(),
            claims.tw_max_connections,
            claims.tw_max_subscriptions,
        )?;
        Ok(Verified { subject: claims.sub, entitlements, expires_ns: claims.exp.saturating_mul(1_000_000_000) })
    }
}
