//! Connection start: TLS/GSS negotiation, the startup packet, authentication, and the greeting
//! (ParameterStatus, BackendKeyData, ReadyForQuery).

use std::collections::BTreeMap;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use crate::error::{sqlstate, ClientError};
use crate::protocol::frame::next_startup_packet;
use crate::protocol::frontend::StartupPacket;
use crate::stream::Stream;

/// What the first packets asked for.
pub enum Opening {
    Startup { stream: Stream, params: Vec<(String, String)>, minor: u16 },
    Cancel { pid: i32, secret: i32 },
}

/// A failed opening: the stream (if still usable) to report the error on.
pub struct OpeningError {
    pub stream: Option<Stream>,
    pub error: ClientError,
}

fn fail(stream: Stream, error: ClientError) -> OpeningError {
    OpeningError { stream: Some(stream), error }
}

/// Reads startup packets until a StartupMessage or CancelRequest, answering SSLRequest and
/// GSSENCRequest on the way.
pub async fn open(tcp: TcpStream, shared: &Shared, buf: &mut BytesMut) -> Result<Opening, OpeningError> {
    let mut stream = Stream::Plain(tcp);
    loop {
        let packet = match next_startup_packet(buf) {
            Ok(Some(p)) => p,
            Ok(None) => match stream.read_buf(buf).await {
                Ok(0) | Err(_) => {
                    return Err(OpeningError {
                        stream: None,
                        error: ClientError::protocol("connection closed during startup"),
                    })
                }
                Ok(_) => continue,
            },
            Err(e) => return Err(fail(stream, ClientError::protocol(e.to_string()))),
        };
        let decoded = match StartupPacket::decode(&packet) {
            Ok(d) => d,
            Err(e) => return Err(fail(stream, ClientError::protocol(e.to_string()))),
        };
        match decoded {
            StartupPacket::Ssl | StartupPacket::GssEnc if stream.is_tls() => {
                return Err(fail(stream, ClientError::protocol("encryption negotiation repeated after TLS")));
            }
            StartupPacket::Ssl => {
                let Some(acceptor) = shared.tls.clone() else {
                    if stream.write_all(b"N").await.is_err() {
                        return Err(OpeningError {
                            stream: None,
                            error: ClientError::protocol("client went away"),
                        });
                    }
                    continue;
                };
                // Bytes sent before the TLS handshake would be processed as if they came
                // through the encrypted channel (CVE-2021-23222): refuse them.
                if !buf.is_empty() {
                    return Err(fail(
                        stream,
                        ClientError::protocol("received unencrypted data after SSL request"),
                    ));
                }
                // A client stream is plain TCP until this upgrade (the arm above took TLS).
                let mut tcp = match stream {
                    Stream::Plain(tcp) => tcp,
                    other => {
                        return Err(fail(other, ClientError::protocol("encryption negotiation repeated")));
                    }
                };
                if tcp.write_all(b"S").await.is_err() {
                    return Err(OpeningError {
                        stream: None,
                        error: ClientError::protocol("client went away"),
                    });
                }
                match acceptor.accept(tcp).await {
                    Ok(tls) => stream = Stream::Tls(Box::new(tls.into())),
                    Err(e) => {
                        return Err(OpeningError {
                            stream: None,
                            error: ClientError::protocol(format!("TLS handshake failed: {e}")),
                        })
                    }
                }
            }
            StartupPacket::GssEnc => {
                if stream.write_all(b"N").await.is_err() {
                    return Err(OpeningError {
                        stream: None,
                        error: ClientError::protocol("client went away"),
                    });
                }
            }
            StartupPacket::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupPacket::Startup { minor, params } => {
                return Ok(Opening::Startup { stream, params, minor })
            }
        }
    }
}

/// The validated identity and settings of a client.
pub struct Login {
    pub user: String,
    pub database: String,
    /// Session settings from the startup packet, as SQL literals keyed by lower-case name.
    pub settings: BTreeMap<String, String>,
    /// The startup values to echo in ParameterStatus, keyed by the name the client used.
    pub reported: Vec<(String, String)>,
}

/// Quotes a string as an SQL literal.
pub fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Checks the startup parameters: a known user, a database this router serves, no replication.
pub fn check_startup(
    shared: &Shared,
    params: Vec<(String, String)>,
    tls: bool,
) -> Result<Login, ClientError> {
    if shared.config.tls.as_ref().is_some_and(|t| t.require) && !tls {
        return Err(ClientError::fatal(
            "tls_required",
            sqlstate::INVALID_AUTHORIZATION,
            "pg-router requires TLS: connect with sslmode=require",
        ));
    }
    let mut user = None;
    let mut database = None;
    let mut settings = BTreeMap::new();
    let mut reported = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" if value != "false" && value != "0" && value != "off" => {
                return Err(ClientError::fatal(
                    "unsupported",
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "replication connections are not supported by pg-router",
                ))
            }
            "replication" => {}
            "options" => {
                for (k, v) in parse_options(&value)? {
                    settings.insert(k, literal(&v));
                }
            }
            // Protocol extensions (`_pq_.*`) are declined in NegotiateProtocolVersion.
            n if n.starts_with("_pq_.") => {}
            _ => {
                settings.insert(name.to_ascii_lowercase(), literal(&value));
                reported.push((name, value));
            }
        }
    }
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Err(ClientError::fatal(
            "auth_failed",
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        ));
    };
    let database = database.filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    Ok(Login { user, database, settings, reported })
}

/// Parses libpq's `options` (`-c name=value` and `--name=value`, space separated, `\` escapes).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ClientError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let bad = |w: &str| {
        ClientError::fatal(
            "unsupported",
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("unsupported startup option {w:?}: only -c name=value and --name=value are accepted"),
        )
    };
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or_else(|| bad(w))?.as_str()
        } else if let Some(s) = w.strip_prefix("-c").or_else(|| w.strip_prefix("--")) {
            s
        } else {
            return Err(bad(w));
        };
        let (k, v) = setting.split_once('=').ok_or_else(|| bad(w))?;
        out.push((k.replace('-', "_").to_ascii_lowercase(), v.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options() {
        let o = parse_options("-c search_path=a,b --statement-timeout=5s -csynchronous_commit=off").unwrap();
        assert_eq!(
            o,
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("synchronous_commit".into(), "off".into())
            ]
        );
        assert!(parse_options("-x").is_err());
        assert_eq!(parse_options("-c a=b\\ c").unwrap(), vec![("a".into(), "b c".into())]);
        assert_eq!(literal("it's"), "'it''s'");
    }
}
