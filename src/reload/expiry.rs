//! Certificates near or past their expiry: the gauge rows and the
//! warnings `run` logs and `check` prints.

use crate::clock::now_unix;
use crate::metrics::CertExpiry;
use crate::tls::ListenerTls;
use tracing::warn;

/// Certificates closer than this to expiry are logged as warnings.
pub(super) const EXPIRY_WARNING_DAYS: i64 = 14;

/// The expiry rows of one listener: its served certificates and the
/// client CAs it trusts.
pub(super) fn expiries(listener: &str, tls: &ListenerTls) -> Vec<CertExpiry> {
    let served = tls.served.iter().map(|c| (c, "server"));
    let trusted = tls.trusted.iter().map(|c| (c, "client_ca"));
    served
        .chain(trusted)
        .map(|(c, role)| CertExpiry {
            listener: listener.to_string(),
            role,
            subject: c.subject.clone(),
            not_after: c.not_after,
        })
        .collect()
}

/// The expiry rows of the admin listener's TLS (listener `admin`): its
/// certificate and the CAs of admin certificates.
pub(super) fn admin_expiries(tls: &crate::tls::admin::AdminTls) -> Vec<CertExpiry> {
    std::iter::once((&tls.served, "server"))
        .chain(tls.trusted.iter().map(|c| (c, "client_ca")))
        .map(|(c, role)| CertExpiry {
            listener: "admin".to_string(),
            role,
            subject: c.subject.clone(),
            not_after: c.not_after,
        })
        .collect()
}

/// The warning about a certificate that has expired or expires within
/// [`EXPIRY_WARNING_DAYS`], if it does: what `run` logs and `check` prints.
pub(super) fn expiry_warning(c: &CertExpiry, now: i64) -> Option<String> {
    let what = if c.role == "server" {
        "server"
    } else {
        "client CA"
    };
    let days = (c.not_after - now).div_euclid(86_400);
    if c.not_after <= now {
        Some(format!(
            "the {what} certificate \"{}\" has EXPIRED; replace it",
            c.subject
        ))
    } else if days < EXPIRY_WARNING_DAYS {
        Some(format!(
            "the {what} certificate \"{}\" expires in {days} day(s); replace it",
            c.subject
        ))
    } else {
        None
    }
}

/// Logs [`expiry_warning`] for each certificate that has one.
pub(super) fn warn_expiring(certs: &[CertExpiry]) {
    let now = now_unix();
    for c in certs {
        if let Some(w) = expiry_warning(c, now) {
            warn!(listener = %c.listener, role = c.role, subject = %c.subject, "{w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(role: &'static str, not_after: i64) -> CertExpiry {
        CertExpiry {
            listener: "agents".into(),
            role,
            subject: "CN=gw".into(),
            not_after,
        }
    }

    #[test]
    fn warns_inside_the_window_and_after_expiry_only() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(expiry_warning(&cert("server", now + 30 * day), now), None);
        assert_eq!(
            expiry_warning(&cert("server", now + EXPIRY_WARNING_DAYS * day), now),
            None
        );
        assert_eq!(
            expiry_warning(&cert("server", now + 3 * day + 5), now).as_deref(),
            Some("the server certificate \"CN=gw\" expires in 3 day(s); replace it")
        );
        assert_eq!(
            expiry_warning(&cert("client_ca", now), now).as_deref(),
            Some("the client CA certificate \"CN=gw\" has EXPIRED; replace it")
        );
    }
}
