//! Access control: who may upgrade, to which room, and until when.
//!
//! With [`Config::auth_secret`](crate::Config::auth_secret) every
//! WebSocket upgrade must carry an HS256 JWT (the `jsonwebtoken` crate,
//! with its pure-Rust `rust_crypto` backend; the `jwt` cargo feature) whose
//! claims are `sub` (who), `exp` (required) and `rooms` (names or patterns
//! such as `team-*`; absent: every room). The token travels in one of
//! three carriers: `?token=` in the query string, an
//! `Authorization: Bearer` header, or a `Sec-WebSocket-Protocol` entry
//! `bearer.<token>` beside a real subprotocol. A host program can decide
//! instead with an [`Authorizer`], given the request head.
//!
//! The answer is an [`Access`]: allow (with the subject and when the grant
//! ends), or refuse with a status — 401 for a missing, malformed, badly
//! signed or expired token, 403 for a room the token does not grant.
//!
//! Invariants: a token is never logged or echoed back; no carrier is
//! believed without the signature check; without a secret and without an
//! authorizer, everything is allowed, as before.
//!
//! May touch: nothing but the request head it is given.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tungstenite::http::{Request, header};

/// An HMAC secret (the bytes of `--auth-secret-file`); its `Debug` does
/// not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, as given (a file's whole content, say).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// What an access decision is given: the request head and where it came from.
#[non_exhaustive]
pub struct AccessRequest<'a> {
    /// The whole request head (path, query, headers).
    pub request: &'a Request<()>,
    /// The peer's address (the proxy's, behind one).
    pub peer: SocketAddr,
    /// The room asked for: `Some("")` for the lobby at `/ws`; `None` for
    /// `/echo` and for the admin endpoints `/rooms` and `/metrics`.
    pub room: Option<&'a str>,
    /// The bearer token, from whichever carrier had one.
    pub token: Option<&'a str>,
}

/// What a connection may do, once allowed.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Grant {
    /// Who (a token's `sub`).
    pub subject: Option<String>,
    /// When the grant ends (a token's `exp`): the connection is closed
    /// with 1008 "token expired" then.
    pub expires: Option<SystemTime>,
}

impl Grant {
    /// A grant for `subject`, ending at `expires` if given.
    pub fn new(subject: Option<String>, expires: Option<SystemTime>) -> Grant {
        Grant { subject, expires }
    }
}

/// An access decision.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Access {
    /// Let it in.
    Allow(Grant),
    /// Refuse the upgrade with this HTTP status (401, 403, …) and a
    /// one-line reason (sent in the body and logged: never a token).
    Refuse {
        /// The HTTP status.
        status: u16,
        /// Why, in one line.
        reason: String,
    },
}

impl Access {
    /// Allowed, without a subject or an end.
    pub fn allow() -> Access {
        Access::Allow(Grant::default())
    }

    /// Refused with `status` and `reason`.
    pub fn refuse(status: u16, reason: impl Into<String>) -> Access {
        Access::Refuse {
            status,
            reason: reason.into(),
        }
    }
}

/// A host program's own access decision, in place of JWT: given every
/// upgrade (and, with [`Config::protect_admin`](crate::Config::protect_admin),
/// every `/rooms` and `/metrics` request), it answers allow or a status.
/// It runs on the connection's thread, before the upgrade; it may block
/// briefly (a session lookup) but holds up only that connection.
#[derive(Clone)]
pub struct Authorizer(Arc<dyn Fn(&AccessRequest<'_>) -> Access + Send + Sync>);

impl Authorizer {
    /// Wraps `decide`.
    pub fn new(decide: impl Fn(&AccessRequest<'_>) -> Access + Send + Sync + 'static) -> Self {
        Authorizer(Arc::new(decide))
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer(..)")
    }
}

/// The bearer token of a request: `?token=`, then `Authorization: Bearer`,
/// then a `bearer.<token>` subprotocol entry.
pub(crate) fn token_of(request: &Request<()>) -> Option<String> {
    let query = request.uri().query().unwrap_or("");
    if let Some((_, token)) =
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "token")
    {
        return Some(token.into_owned());
    }
    let headers = request.headers();
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim().to_string());
        }
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_string))
}

/// Whether `room` matches `pattern`, where `*` stands for any run of
/// characters (`team-*`, `*`; the lobby is `""`): how a token's `rooms`
/// are read, for an [`Authorizer`] that wants the same rule.
///
/// ```
/// use wshub::auth::room_matches;
/// assert!(room_matches("team-*", "team-red"));
/// assert!(!room_matches("team-*", "ops"));
/// ```
pub fn room_matches(pattern: &str, room: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = room.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No '*': the whole name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The server's access policy, made once at start from the configuration.
pub(crate) struct Gate {
    #[cfg(feature = "jwt")]
    jwt: Option<jwt::Verifier>,
    authorizer: Option<Authorizer>,
}

impl Gate {
    /// The policy of a token `secret` or a host's `authorizer` (at most
    /// one of them); an error for a secret that cannot be used.
    pub(crate) fn new(
        secret: Option<&Secret>,
        authorizer: Option<&Authorizer>,
    ) -> crate::Result<Gate> {
        let bad = |what: &str| Err(crate::Error::Config(what.to_string()));
        if secret.is_some() && authorizer.is_some() {
            return bad("an auth secret and an authorizer cannot both decide");
        }
        #[cfg(feature = "jwt")]
        let jwt = match secret {
            Some(secret) => Some(jwt::Verifier::new(secret)?),
            None => None,
        };
        #[cfg(not(feature = "jwt"))]
        if secret.is_some() {
            return bad("this build has no JWT support (the `jwt` feature)");
        }
        Ok(Gate {
            #[cfg(feature = "jwt")]
            jwt,
            authorizer: authorizer.cloned(),
        })
    }

    /// Whether anything is checked at all.
    pub(crate) fn enabled(&self) -> bool {
        #[cfg(feature = "jwt")]
        if self.jwt.is_some() {
            return true;
        }
        self.authorizer.is_some()
    }

    /// The decision for `request` from `peer`, asking for `room`.
    pub(crate) fn check(
        &self,
        request: &Request<()>,
        peer: SocketAddr,
        room: Option<&str>,
    ) -> Access {
        if !self.enabled() {
            return Access::allow();
        }
        let token = token_of(request);
        if let Some(authorizer) = &self.authorizer {
            return (authorizer.0)(&AccessRequest {
                request,
                peer,
                room,
                token: token.as_deref(),
            });
        }
        #[cfg(feature = "jwt")]
        if let Some(jwt) = &self.jwt {
            return jwt.check(token.as_deref(), room);
        }
        Access::allow()
    }
}

/// Mints an HS256 token for `subject`, valid for `ttl`, for `rooms`
/// (names or patterns; `None`: every room). What `wshub token` prints.
#[cfg(feature = "jwt")]
pub fn mint_token(
    secret: &Secret,
    subject: &str,
    rooms: Option<&[String]>,
    ttl: std::time::Duration,
) -> crate::Result<String> {
    jwt::mint(secret, subject, rooms, ttl)
}

#[cfg(feature = "jwt")]
mod jwt {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use serde::{Deserialize, Serialize};

    use super::{Access, Grant, Secret, room_matches};

    #[derive(Serialize, Deserialize)]
    struct Claims {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        exp: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<Vec<String>>,
    }

    pub(super) struct Verifier {
        key: DecodingKey,
        validation: Validation,
    }

    impl Verifier {
        pub(super) fn new(secret: &Secret) -> crate::Result<Verifier> {
            let key = DecodingKey::from_secret(secret.bytes())
                .map_err(|_| crate::Error::Config("the auth secret is empty".into()))?;
            let mut validation = Validation::new(Algorithm::HS256);
            // `exp` is exact: a token is refused from its expiry on, as
            // a connection holding it is closed then.
            validation.leeway = 0;
            validation.validate_aud = false;
            Ok(Verifier { key, validation })
        }

        pub(super) fn check(&self, token: Option<&str>, room: Option<&str>) -> Access {
            let Some(token) = token else {
                return Access::refuse(
                    401,
                    "a token is required (?token=, Authorization: Bearer, or a bearer.<token> subprotocol)",
                );
            };
            let claims = match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
                Ok(data) => data.claims,
                Err(e) => {
                    let why = match e.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::InvalidSignature => "token signature does not verify",
                        ErrorKind::MissingRequiredClaim(_) => "token has no exp",
                        ErrorKind::InvalidAlgorithm => "token is not HS256",
                        _ => "malformed token",
                    };
                    return Access::refuse(401, why);
                }
            };
            if let (Some(room), Some(rooms)) = (room, &claims.rooms)
                && !rooms.iter().any(|pattern| room_matches(pattern, room))
            {
                let name = if room.is_empty() { "the lobby" } else { room };
                return Access::refuse(403, format!("the token does not grant {name}"));
            }
            Access::Allow(Grant {
                subject: claims.sub,
                expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
            })
        }
    }

    pub(super) fn mint(
        secret: &Secret,
        subject: &str,
        rooms: Option<&[String]>,
        ttl: Duration,
    ) -> crate::Result<String> {
        let key = EncodingKey::from_secret(secret.bytes())
            .map_err(|_| crate::Error::Config("the auth secret is empty".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: Some(subject.to_string()),
            exp: (now + ttl).as_secs(),
            rooms: rooms.map(<[String]>::to_vec),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
            .map_err(|e| crate::Error::Config(format!("cannot sign the token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_prefixes_and_the_lobby() {
        assert!(room_matches("ops", "ops"));
        assert!(!room_matches("ops", "ops2"));
        assert!(room_matches("team-*", "team-a"));
        assert!(room_matches("team-*", "team-"));
        assert!(!room_matches("team-*", "ops"));
        assert!(room_matches("*", "anything"));
        assert!(room_matches("*", ""));
        assert!(room_matches("", ""));
        assert!(!room_matches("", "ops"));
        assert!(room_matches("a*b*c", "a-x-b-y-c"));
        assert!(!room_matches("a*b*c", "a-c"));
    }

    #[test]
    fn tokens_come_from_the_query_the_header_or_a_subprotocol() {
        let req = |uri: &str, name: &str, value: &str| {
            let mut b = Request::builder().uri(uri);
            if !name.is_empty() {
                b = b.header(name, value);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            token_of(&req("/ws?token=abc", "", "")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            token_of(&req("/ws", "Authorization", "Bearer xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            token_of(&req("/ws", "Sec-WebSocket-Protocol", "chat, bearer.t0k")).as_deref(),
            Some("t0k")
        );
        assert_eq!(token_of(&req("/ws", "Authorization", "Basic Zm9v")), None);
        assert_eq!(token_of(&req("/ws?x=1", "", "")), None);
    }
}
