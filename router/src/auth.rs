//! Client authentication: SCRAM-SHA-256 (default), md5 and trust.
//!
//! The SCRAM exchange itself is pgwire's sans-IO `ScramServerAuth`; this module drives it over
//! the client stream. Cleartext passwords from the config are salted and hashed once at start
//! (4096 PBKDF2 rounds cost milliseconds, which must not be paid per login).

use base64::Engine as _;
use bytes::BytesMut;
use md5::Digest as _;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, ScramServerAuth};
use rand::RngCore as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{AuthMethod, RawUser};
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend::{self, AuthRequest};
use crate::protocol::frame::next_frame;
use crate::protocol::frontend::{self, tag};

/// PostgreSQL's default `scram_iterations`.
const SCRAM_ITERATIONS: usize = 4096;
/// Authentication messages are small; PostgreSQL caps them at `PG_MAX_AUTH_TOKEN_LENGTH` (65535).
const MAX_AUTH_MESSAGE: usize = 65_535;

/// What a client must prove.
#[derive(Debug, Clone)]
pub enum ClientSecret {
    None,
    Cleartext(String),
    /// `md5` followed by 32 hex digits: md5(password || username).
    Md5Hash(String),
    ScramVerifier,
}

/// SCRAM key material (pgwire's `ScramSecret` is not `Clone`; one is built per login).
#[derive(Clone)]
enum ScramKey {
    Salted { salt: Vec<u8>, salted_password: Vec<u8> },
    Verifier { salt: Vec<u8>, iterations: usize, stored_key: Vec<u8>, server_key: Vec<u8> },
}

impl ScramKey {
    fn secret(&self) -> ScramSecret {
        match self.clone() {
            Self::Salted { salt, salted_password } => ScramSecret::SaltedPassword { salt, salted_password },
            Self::Verifier { salt, iterations, stored_key, server_key } => {
                ScramSecret::Verifier { salt, iterations, stored_key, server_key }
            }
        }
    }
}

/// A configured user, ready for logins.
#[derive(Clone)]
pub struct UserAuth {
    pub method: AuthMethod,
    pub secret: ClientSecret,
    scram: Option<ScramKey>,
    pub backend_user: String,
    pub backend_password: Option<String>,
}

impl std::fmt::Debug for UserAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAuth")
            .field("method", &self.method)
            .field("backend_user", &self.backend_user)
            .finish_non_exhaustive()
    }
}

impl UserAuth {
    /// Builds the login state for one `[[users]]` entry; the error says what is wrong with it.
    pub fn from_raw(raw: &RawUser) -> Result<Self, String> {
        if raw.name.is_empty() {
            return Err("name must not be empty".into());
        }
        let secret = match raw.password.as_deref() {
            None => ClientSecret::None,
            Some(p) if p.starts_with("SCRAM-SHA-256$") => ClientSecret::ScramVerifier,
            Some(p)
                if p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                ClientSecret::Md5Hash(p.to_ascii_lowercase())
            }
            Some(p) => ClientSecret::Cleartext(p.to_owned()),
        };
        let scram = match (raw.auth, &secret, raw.password.as_deref()) {
            (AuthMethod::Trust, _, _) => None,
            (_, ClientSecret::None, _) => return Err("password is required unless auth = \"trust\"".into()),
            (AuthMethod::ScramSha256, ClientSecret::Md5Hash(_), _) => {
                return Err("an md5 password hash cannot be used with auth = \"scram-sha-256\"".into())
            }
            (AuthMethod::Md5, ClientSecret::ScramVerifier, _) => {
                return Err("a SCRAM verifier cannot be used with auth = \"md5\"".into())
            }
            (AuthMethod::ScramSha256, ClientSecret::ScramVerifier, Some(v)) => Some(parse_verifier(v)?),
            (AuthMethod::ScramSha256, ClientSecret::Cleartext(p), _) => {
                let mut salt = vec![0u8; 16];
                rand::rng().fill_bytes(&mut salt);
                let salted_password = gen_salted_password(p, &salt, SCRAM_ITERATIONS);
                Some(ScramKey::Salted { salt, salted_password })
            }
            _ => None,
        };
        let backend_password = match (&raw.backend_password, &secret) {
            (Some(p), _) => Some(p.clone()),
            (None, ClientSecret::Cleartext(p)) => Some(p.clone()),
            _ => None,
        };
        Ok(Self {
            method: raw.auth,
            secret,
            scram,
            backend_user: raw.backend_user.clone().unwrap_or_else(|| raw.name.clone()),
            backend_password,
        })
    }
}

/// Parses a PostgreSQL SCRAM verifier: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
fn parse_verifier(v: &str) -> Result<ScramKey, String> {
    let bad = || "password: malformed SCRAM-SHA-256 verifier".to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let rest = v.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
    let (iter_salt, keys) = rest.split_once('$').ok_or_else(bad)?;
    let (iter, salt) = iter_salt.split_once(':').ok_or_else(bad)?;
    let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
    Ok(ScramKey::Verifier {
        salt: b64.decode(salt).map_err(|_| bad())?,
        iterations: iter.parse().map_err(|_| bad())?,
        stored_key: b64.decode(stored).map_err(|_| bad())?,
        server_key: b64.decode(server).map_err(|_| bad())?,
    })
}

fn auth_failed(user: &str, method: &str) -> ClientError {
    ClientError::fatal(
        "auth_failed",
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
    .with_detail(format!("Connection matched pg-router user \"{user}\" with {method} authentication."))
}

/// Runs the authentication exchange for `user` and writes AuthenticationOk on success.
pub async fn authenticate<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    username: &str,
    user: &UserAuth,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    match user.method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            rand::rng().fill_bytes(&mut salt);
            backend::authentication(&mut out, AuthRequest::Md5 { salt });
            send(stream, &mut out).await?;
            let body = read_password_message(stream, buf).await?;
            let given = frontend::password(&body).map_err(|e| ClientError::protocol(e.to_string()))?;
            let expected = match &user.secret {
                ClientSecret::Cleartext(p) => {
                    postgres_protocol::authentication::md5_hash(username.as_bytes(), p.as_bytes(), salt)
                }
                ClientSecret::Md5Hash(h) => md5_with_salt(&h[3..], salt),
                _ => return Err(auth_failed(username, "md5")),
            };
            if given != expected {
                return Err(auth_failed(username, "md5"));
            }
        }
        AuthMethod::ScramSha256 => {
            let Some(secret) = user.scram.as_ref().map(ScramKey::secret) else {
                return Err(auth_failed(username, "SCRAM-SHA-256"));
            };
            scram(stream, buf, username, secret).await?;
        }
    }
    backend::authentication(&mut out, AuthRequest::Ok);
    send(stream, &mut out).await
}

async fn scram<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    username: &str,
    secret: ScramSecret,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    backend::authentication(&mut out, AuthRequest::Sasl { mechanisms: &["SCRAM-SHA-256"] });
    send(stream, &mut out).await?;
    let body = read_password_message(stream, buf).await?;
    let (mechanism, first) =
        frontend::sasl_initial_response(&body).map_err(|e| ClientError::protocol(e.to_string()))?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(ClientError::protocol(format!(
            "client selected an invalid SASL authentication mechanism: {mechanism:?}"
        )));
    }
    let mut server = ScramServerAuth::new();
    server.set_iterations(SCRAM_ITERATIONS);
    let (server_first, waiting) = server
        .on_client_first_message_with_secret(first, secret)
        .map_err(|e| ClientError::protocol(format!("malformed SCRAM message: {e}")))?;
    backend::authentication(&mut out, AuthRequest::SaslContinue { data: server_first.as_bytes() });
    send(stream, &mut out).await?;
    let body = read_password_message(stream, buf).await?;
    let server_final = match waiting.on_client_final_message(&body) {
        Ok(f) => f,
        Err(pgwire::error::PgWireError::InvalidPassword(_)) => {
            return Err(auth_failed(username, "SCRAM-SHA-256"))
        }
        Err(e) => return Err(ClientError::protocol(format!("malformed SCRAM message: {e}"))),
    };
    backend::authentication(&mut out, AuthRequest::SaslFinal { data: server_final.as_bytes() });
    send(stream, &mut out).await
}

fn md5_with_salt(hex_hash: &str, salt: [u8; 4]) -> String {
    let mut h = md5::Md5::new();
    h.update(hex_hash.as_bytes());
    h.update(salt);
    let digest = h.finalize();
    let mut s = String::with_capacity(35);
    s.push_str("md5");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut) -> Result<(), ClientError> {
    stream.write_all(out).await.map_err(client_gone)?;
    out.clear();
    Ok(())
}

fn client_gone(e: std::io::Error) -> ClientError {
    ClientError::fatal("client_io", sqlstate::CONNECTION_FAILURE, format!("client connection lost: {e}"))
}

/// Reads one PasswordMessage-family frame ('p') and returns its body.
async fn read_password_message<S>(stream: &mut S, buf: &mut BytesMut) -> Result<Vec<u8>, ClientError>
where
    S: AsyncRead + Unpin,
{
    loop {
        match next_frame(buf, MAX_AUTH_MESSAGE) {
            Err(e) => return Err(ClientError::protocol(e.to_string())),
            Ok(Some(f)) if f.tag == tag::PASSWORD => return Ok(f.body().to_vec()),
            Ok(Some(f)) => {
                return Err(ClientError::protocol(format!(
                    "expected password response, got message type '{}'",
                    char::from(f.tag)
                )))
            }
            Ok(None) => {}
        }
        if stream.read_buf(buf).await.map_err(client_gone)? == 0 {
            return Err(client_gone(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(password: Option<&str>, auth: AuthMethod) -> RawUser {
        RawUser {
            name: "alice".into(),
            password: password.map(Into::into),
            auth,
            backend_user: None,
            backend_password: None,
        }
    }

    #[test]
    fn secrets_are_classified() {
        let u = UserAuth::from_raw(&user(Some("pw"), AuthMethod::ScramSha256)).unwrap();
        assert!(matches!(u.secret, ClientSecret::Cleartext(_)));
        assert_eq!(u.backend_password.as_deref(), Some("pw"));
        let md5 = "md5".to_string() + &"a".repeat(32);
        let u = UserAuth::from_raw(&user(Some(&md5), AuthMethod::Md5)).unwrap();
        assert!(matches!(u.secret, ClientSecret::Md5Hash(_)));
        assert!(u.backend_password.is_none());
        assert!(UserAuth::from_raw(&user(Some(&md5), AuthMethod::ScramSha256)).is_err());
        assert!(UserAuth::from_raw(&user(None, AuthMethod::Md5)).is_err());
        assert!(UserAuth::from_raw(&user(None, AuthMethod::Trust)).is_ok());
        assert!(UserAuth::from_raw(&user(Some("SCRAM-SHA-256$x"), AuthMethod::ScramSha256)).is_err());
    }

    #[test]
    fn md5_stored_hash_matches_cleartext_hash() {
        let salt = [1, 2, 3, 4];
        let inner = {
            let mut h = md5::Md5::new();
            h.update(b"pwalice");
            h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(
            md5_with_salt(&inner, salt),
            postgres_protocol::authentication::md5_hash(b"alice", b"pw", salt)
        );
    }
}
