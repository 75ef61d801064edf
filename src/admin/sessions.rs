//! Who is using the console: with `[admin] token_file`, a token signed in
//! for a session cookie; without one (a loopback-only listener), everyone
//! is `local`, as in the API. Every form carries an anti-forgery token
//! bound to the session (or, for `local`, to this process), which a page
//! of another site cannot read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::sha256;

/// How long a session lasts from sign-in.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 1024;
/// The cookie's name.
pub(crate) const COOKIE: &str = "certgate_session";

/// One signed-in session.
#[derive(Debug, Clone)]
struct Session {
    who: String,
    /// Digest of the token it was opened with: the session ends when that
    /// token leaves the token file.
    token: [u8; 32],
    csrf: String,
    expires: Instant,
}

/// The signed-in sessions, kept in memory (a restart signs everyone out).
#[derive(Debug)]
pub(crate) struct Sessions {
    /// By the SHA-256 of the cookie value: the map never holds a secret a
    /// memory dump would hand over as a working cookie.
    open: Mutex<HashMap<[u8; 32], Session>>,
    /// The anti-forgery token of `local` callers (no token file).
    local_csrf: String,
}

/// The caller of a console request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The name the audit log records.
    pub who: String,
    /// What every form of this caller must send back.
    pub csrf: String,
    /// Whether the caller signed in (and may sign out).
    pub signed_in: bool,
}

fn random_hex() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = [0u8; 32];
    // The system RNG does not fail on Linux; if it ever did, an all-zero
    // value would be guessable, so the process would rather stop serving
    // sessions: the caller gets no session (see `open`).
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut b).is_err() {
        return String::new();
    }
    crate::identity::hex_lower(&b)
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            open: Mutex::new(HashMap::new()),
            local_csrf: random_hex(),
        }
    }
}

impl Sessions {
    /// The `local` caller (no token file).
    pub(crate) fn local(&self) -> Caller {
        Caller {
            who: "local".into(),
            csrf: self.local_csrf.clone(),
            signed_in: false,
        }
    }

    /// Opens a session for `who` (signed in with the token whose digest is
    /// `token`); the cookie value, or `None` if no secure one can be made.
    pub(crate) fn open(&self, who: &str, token: [u8; 32]) -> Option<String> {
        let id = random_hex();
        let csrf = random_hex();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(
            sha256(id.as_bytes()),
            Session {
                who: who.to_string(),
                token,
                csrf,
                expires: now + LIFETIME,
            },
        );
        Some(id)
    }

    /// The caller holding cookie value `id`, while its session lasts and
    /// `token_name` still names its token.
    pub(crate) fn find(
        &self,
        id: &str,
        token_name: impl Fn(&[u8; 32]) -> Option<String>,
    ) -> Option<Caller> {
        let key = sha256(id.as_bytes());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let s = open.get(&key)?;
        if s.expires <= Instant::now() {
            open.remove(&key);
            return None;
        }
        match token_name(&s.token) {
            Some(name) if name == s.who => Some(Caller {
                who: s.who.clone(),
                csrf: s.csrf.clone(),
                signed_in: true,
            }),
            _ => {
                open.remove(&key);
                None
            }
        }
    }

    /// Ends the session of cookie value `id`.
    pub(crate) fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&sha256(id.as_bytes()));
    }
}

/// The session cookie's value in a request's `Cookie` headers.
pub(crate) fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// `Set-Cookie` for a new session (`secure` over TLS).
pub(crate) fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether `given` is `caller`'s anti-forgery token (constant time).
pub(crate) fn csrf_ok(caller: &Caller, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    !caller.csrf.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            &sha256(caller.csrf.as_bytes()),
            &sha256(given.as_bytes()),
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_its_token_is_gone_or_it_is_closed() {
        let s = Sessions::default();
        let id = s.open("alice", [1; 32]).unwrap_or_default();
        assert!(!id.is_empty());
        let named = |d: &[u8; 32]| (d == &[1; 32]).then(|| "alice".to_string());
        let c = s.find(&id, named).unwrap_or_else(|| panic!("session"));
        assert_eq!(c.who, "alice");
        assert!(csrf_ok(&c, Some(&c.csrf)));
        assert!(!csrf_ok(&c, Some("forged")));
        assert!(!csrf_ok(&c, None));
        assert!(s.find("not-a-session", named).is_none());
        // The token file no longer has alice's token.
        assert!(s.find(&id, |_| None).is_none());
        assert!(s.find(&id, named).is_none(), "removed for good");
        let id = s.open("bob", [2; 32]).unwrap_or_default();
        s.close(&id);
        assert!(s.find(&id, |_| Some("bob".into())).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_strictly() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=1; certgate_session=abc; b=2"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let set = set_cookie("abc", true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=28800",
            "Path=/",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
    }
}
