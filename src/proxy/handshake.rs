//! The TLS handshake of one connection: admission, classification for
//! the readiness report, what the registry learns, and the identity the
//! connection carries.

use super::connection::Ready;
use super::headers::{ClientFacts, ClientIdentity};
use super::lifeline::Lifeline;
use super::{Admission, ListenerShared, ListenerState};
use crate::admission::{Admitted, Failure, FailureClass, Refusal, Verdict};
use crate::config::ClientAuthMode;
use crate::identity;
use crate::readiness::{Event as ReadinessEvent, Status};
use crate::registry::{Observation, Record};
use crate::tls::hello::{self, Offered, Recorded};
use crate::tls::{self, HandshakeNote, ListenerTls};
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

pub(super) fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        _ => "other",
    }
}

pub(super) type Tls = tls::stream::TlsStream<Recorded<TcpStream>>;

/// After a completed handshake: a resumed session is verified again
/// (rustls restores its client chain without calling the verifier), with
/// the listener state it was accepted under. A refusal says why: the
/// policy's reason when the policy refused, else the CA failure's.
pub(super) fn check_session(
    stream: Tls,
    tls: &ListenerTls,
) -> Result<Tls, (Option<Refusal>, Failure, String)> {
    let (_, conn) = stream.get_ref();
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        && let (Some(v), Some(certs)) = (&tls.verifier, conn.peer_certificates())
        && let Err(e) = tls::reverify(v.as_ref(), certs)
    {
        let noted = tls::HANDSHAKE
            .try_with(|n| match n.borrow().verdict {
                Some(Verdict::Refuse { reason, .. }) => Some(reason),
                _ => None,
            })
            .ok()
            .flatten();
        let reason = noted.map_or_else(|| tls::failure_reason(&e), Failure::Refused);
        return Err((noted, reason, tls::failure_detail(&e)));
    }
    Ok(stream)
}

/// Waits for the OCSP answer of a device not seen before (the handshake
/// itself never waits on the network) and says whether to serve it.
async fn ocsp_outcome(wait: tls::note::OcspWait) -> Result<(), (Failure, String)> {
    use crate::revocation::ocsp::Decision;
    match wait.pending.wait(wait.timeout, wait.mode).await {
        Decision::Admit | Decision::Wait(_) => Ok(()),
        Decision::Revoked => Err((
            Failure::Revoked,
            "the OCSP responder says the device certificate is revoked".into(),
        )),
        Decision::Unknown => Err((
            Failure::OcspUnknown,
            "the OCSP responder does not know the device certificate (ocsp = \"require\")".into(),
        )),
        Decision::Unavailable(why) => Err((
            Failure::OcspUnavailable,
            format!("{why} (ocsp = \"require\")"),
        )),
    }
}

/// Tells the registry about a handshake of a device it knows, or of a
/// first-seen device it is to record.
pub(super) fn observe(
    tls: &ListenerTls,
    note: &HandshakeNote,
    peer: SocketAddr,
    refused: Option<&'static str>,
    admitted_record: bool,
) {
    let Some(reg) = tls.policy.as_ref().and_then(|p| p.registry.as_ref()) else {
        return;
    };
    // A resumed session counts for its device too (last seen, connections).
    let Some(fp) = note.fingerprint.or(note.resumed) else {
        return;
    };
    let record = match note.verdict {
        Some(Verdict::Refuse { record, .. }) => record,
        // What an admission records waits for the connection to be
        // admitted (an OCSP refusal after the handshake records nothing).
        Some(Verdict::Admit { record, .. }) if admitted_record => record,
        _ => Record::Seen,
    };
    // Refusals of certificates the registry has never seen and will not
    // record (bad CA, expired, ...) are not sent: strangers cannot fill
    // the queue with them.
    if record == Record::Seen && reg.status(&fp).is_none() {
        return;
    }
    reg.observe(Observation {
        fingerprint: fp,
        // Only what the writer needs: a certificate it already has is not
        // copied into the queue.
        der: note.der.clone().filter(|_| record != Record::Seen),
        peer,
        at: crate::clock::now_unix(),
        refused,
        record,
    });
}

/// The readiness status of a policy refusal.
pub(super) fn refusal_status(r: Refusal) -> Status {
    match r {
        Refusal::Blocked => Status::Blocked,
        Refusal::Unapproved | Refusal::NotAllowed | Refusal::Superseded => Status::Unapproved,
    }
}

/// How a client authenticated, for the readiness report, the
/// `client_auth` metric and `X-Client-Verify`: a status and, unless it
/// authenticated or sent no certificate, the reason.
pub(super) type Class = (Status, Option<Failure>);

fn failure_class(f: Failure) -> Class {
    match f.class() {
        FailureClass::NoCredentials => (Status::NoCredentials, None),
        FailureClass::Refused(r) => (refusal_status(r), Some(f)),
        FailureClass::Failed => (Status::Failed, Some(f)),
        FailureClass::UpgradeRequired => (Status::UpgradeRequired, Some(f)),
    }
}

/// How a client authenticated, from what the verifier noted: `policy` when
/// the policy refused it, `failure` when the handshake failed otherwise.
/// The reason is `None` for a client that authenticated or sent no
/// certificate.
pub(super) fn classify(
    note: &HandshakeNote,
    policy: Option<Refusal>,
    failure: Option<Failure>,
) -> Class {
    if let Some(r) = policy {
        return (refusal_status(r), Some(Failure::Refused(r)));
    }
    if let Some(f) = failure {
        return failure_class(f);
    }
    if note.fingerprint.is_none() {
        return (Status::NoCredentials, None);
    }
    if let Some(f) = note.ca_failure {
        return failure_class(f);
    }
    match note.verdict {
        Some(Verdict::Refuse { reason, .. }) => {
            (refusal_status(reason), Some(Failure::Refused(reason)))
        }
        _ => (Status::Authenticated, None),
    }
}

pub(super) fn record(
    state: &ListenerState,
    peer: SocketAddr,
    (status, reason): Class,
    note: &HandshakeNote,
    subject: Option<String>,
    legacy: Option<String>,
) {
    state
        .metrics
        .client_auth(status.as_str(), reason.map_or("none", Failure::as_str));
    if let Some(r) = &state.readiness {
        r.record(ReadinessEvent {
            listener: state.name.clone(),
            status,
            reason,
            peer: peer.ip().to_canonical(),
            // A resumed session did not reach the verifier: the session's
            // device is the client all the same.
            fingerprint: note
                .fingerprint
                .or(note.resumed)
                .map(|f| identity::sha256_hex_of(&f)),
            subject,
            legacy_version: legacy,
            at: crate::clock::now_unix(),
        });
    }
}

/// Runs the TLS handshake of an accepted connection under `tls_state`
/// (the listener's TLS state at accept), admits or refuses the client,
/// and returns the admitted connection to be served.
pub(super) async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    (shared, state, tls_state): (Arc<ListenerShared>, Arc<ListenerState>, Arc<ListenerTls>),
    lifeline: Lifeline,
) -> Option<Box<Ready<Box<Tls>>>> {
    let name = &state.name;
    let accepted_at = std::time::Instant::now();
    // The handshake runs inside HANDSHAKE's scope so the verifier (and the
    // session store) can tell this task what they decided. The stream
    // keeps a copy of the ClientHello until then, to explain a refusal.
    let (accepted, note, (offered, suites)) = Box::pin(tls::HANDSHAKE.scope(
        std::cell::RefCell::new(HandshakeNote::default()),
        async {
            let mut offered = (Offered::Incomplete, None);
            let r = tokio::time::timeout(
                state.limits.handshake_timeout,
                tls::stream::accept(tls_state.server_config.clone(), Recorded::new(tcp)),
            )
            .await;
            let r = match r {
                Ok(Ok(mut stream)) => {
                    stream.get_mut().0.forget();
                    // Boxed: the stream (rustls state included) is ~1.2 KiB,
                    // and moved by value it would take a slot in this task's
                    // future at every step of its way into hyper.
                    Ok(check_session(stream, &tls_state).map(Box::new))
                }
                Ok(Err((e, io))) => {
                    offered = (io.offered(), io.offered_suites());
                    Err(Some(e))
                }
                Err(_) => Err(None),
            };
            let note = tls::HANDSHAKE.with(|n| std::mem::take(&mut *n.borrow_mut()));
            (r, note, offered)
        },
    ))
    .await;
    let mut note = note;
    // Held until the refusal is counted and logged, then closed.
    let mut _refused = None;
    let accepted = match (accepted, note.ocsp_wait.take()) {
        (Ok(Ok(stream)), Some(wait)) => match ocsp_outcome(wait).await {
            Ok(()) => Ok(Ok(stream)),
            Err((reason, detail)) => {
                _refused = Some(stream);
                Ok(Err((None, reason, detail)))
            }
        },
        (accepted, _) => accepted,
    };
    let policy_refusal = match note.verdict {
        Some(Verdict::Refuse { reason, .. })
            if reason.by_admin() || tls_state.mode == ClientAuthMode::Required =>
        {
            Some(reason)
        }
        _ => None,
    };
    let stream = match accepted {
        Err(None) => {
            state.metrics.handshake_failure(Failure::Timeout);
            info!(listener = %name, %peer, reason = "timeout",
                    "TLS handshake not completed within {:?}; closed", state.limits.handshake_timeout);
            return None;
        }
        Err(Some(e)) => {
            let (mut reason, mut detail) = match (
                policy_refusal,
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
            ) {
                (Some(r), _) => (Failure::Refused(r), r.detail().to_string()),
                (None, Some(te)) => (tls::failure_reason(te), tls::failure_detail(te)),
                (None, None) => (Failure::Io, e.to_string()),
            };
            // "No cipher suites in common" says nothing an admin can act
            // on; the resolver noted which key type the client needed.
            if let Some(f) = note.no_usable_certificate
                && matches!(
                    reason,
                    Failure::NoSharedCipher | Failure::NoSharedSignature | Failure::Incompatible
                )
            {
                reason = f;
                detail = f.advice().unwrap_or_default().to_string();
            }
            // rustls refuses a client without any ECDHE group before it
            // asks for a certificate: the offered suites still tell.
            if reason == Failure::NoSharedCipher
                && suites.as_deref().is_some_and(tls::offers_only_cbc)
            {
                reason = Failure::LegacyCbcOnly;
                detail = Failure::LegacyCbcOnly
                    .advice()
                    .unwrap_or_default()
                    .to_string();
            }
            let mut legacy = None;
            if offered.is_legacy()
                && let Some(v) = offered.version()
            {
                let version = hello::version_name(v);
                reason = Failure::LegacyProtocol;
                detail = format!("offered at most {version}; this listener needs TLS 1.2 or newer");
                legacy = Some(version);
            }
            state.metrics.handshake_failure(reason);
            let fp_hex = note.fingerprint.map(|f| identity::sha256_hex_of(&f));
            if let Some(r) = policy_refusal {
                state.metrics.decision(r.as_str());
            }
            info!(listener = %name, %peer, reason = reason.as_str(), error = %detail,
                fingerprint = fp_hex.as_deref().unwrap_or("-"), "TLS handshake refused");
            crate::access::refused(name, peer, reason.as_str(), fp_hex.as_deref());
            if tls_state.mode != ClientAuthMode::Off {
                // A legacy client never got as far as a policy verdict.
                let class = classify(
                    &note,
                    policy_refusal.filter(|_| legacy.is_none()),
                    Some(reason),
                );
                // The refused device's subject (the verifier kept the
                // certificate), so the report names who would be locked out.
                let subject = note.der.as_deref().and_then(identity::subject_of);
                record(&state, peer, class, &note, subject, legacy);
            }
            observe(&tls_state, &note, peer, Some(reason.as_str()), false);
            return None;
        }
        Ok(Err((policy, reason, detail))) => {
            state.metrics.handshake_failure(reason);
            info!(listener = %name, %peer, reason = reason.as_str(), error = %detail,
                "TLS connection refused after the handshake (a resumed session re-verified, or the OCSP answer of a device not seen before); closed");
            if tls_state.mode != ClientAuthMode::Off {
                let subject = note.der.as_deref().and_then(identity::subject_of);
                record(
                    &state,
                    peer,
                    classify(&note, policy, Some(reason)),
                    &note,
                    subject,
                    None,
                );
            }
            return None;
        }
        Ok(Ok(s)) => s,
    };

    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let version = version_label(conn.protocol_version());
    let certs = conn.peer_certificates();
    let class = match (tls_state.mode, certs) {
        (ClientAuthMode::Off, _) => None,
        // Admitted under `required`: the verifier (and re-verification of
        // a resumed session) accepted the certificate.
        (ClientAuthMode::Required, _) => Some((Status::Authenticated, None)),
        (ClientAuthMode::Observe, None) => Some((Status::NoCredentials, None)),
        (ClientAuthMode::Observe, Some(_)) => Some(classify(&note, None, None)),
    };
    if tls_state.mode == ClientAuthMode::Required && certs.is_none() {
        // The verifier requires a certificate; this cannot happen unless
        // rustls changes, and then we refuse rather than admit.
        state.metrics.handshake_failure(Failure::NoCertificate);
        warn!(listener = %name, %peer, "handshake completed without a client certificate; closed");
        return None;
    }
    // Identity headers only for a certificate that passed CA validation:
    // the fields of any other certificate are the client's own claims.
    let ca_valid = class.is_some_and(|(s, _)| s != Status::Failed && s != Status::NoCredentials);
    let mut chain = None;
    let identity = match certs {
        Some(certs) if ca_valid => {
            let Some(id) = certs.first().and_then(|c| ClientIdentity::from_der(c)) else {
                state.metrics.handshake_failure(Failure::BadCertificate);
                warn!(listener = %name, %peer, "client certificate cannot be parsed; closed");
                return None;
            };
            chain = Some(Arc::from(
                certs
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect::<Vec<_>>(),
            ));
            Some(id)
        }
        _ => None,
    };
    // "ca": observe mode without a registry or rules, no admission decision.
    if let Some(Verdict::Admit { why, .. }) = note.verdict
        && why != Admitted::Ca
    {
        state.metrics.decision(why.as_str());
    }
    if let Some(c) = class {
        // The report may show the subject of a certificate that failed
        // validation (it helps find the device); headers never do.
        let subject = identity.as_ref().map(|i| i.id.subject.clone()).or_else(|| {
            certs
                .and_then(|c| c.first())
                .and_then(|c| identity::subject_of(c))
        });
        record(&state, peer, c, &note, subject, None);
    }
    match (&identity, class) {
        (Some(_), Some((Status::Authenticated, _))) => observe(&tls_state, &note, peer, None, true),
        (_, Some((_, reason))) if note.fingerprint.is_some() => observe(
            &tls_state,
            &note,
            peer,
            Some(reason.map_or("none", Failure::as_str)),
            false,
        ),
        _ => {}
    }
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .unwrap_or("unknown");
    state.metrics.handshake(version, cipher, resumed);
    let handshake_time = accepted_at.elapsed();
    state
        .metrics
        .handshake_seconds
        .observe(handshake_time.as_secs_f64());
    let tls_info = super::context::TlsInfo {
        version,
        cipher,
        handshake_ms: handshake_time.as_secs_f64() * 1000.0,
        alpn: match conn.alpn_protocol() {
            Some(b"h2") => super::context::Alpn::Http2,
            Some(b"http/1.1") => super::context::Alpn::Http1,
            _ => super::context::Alpn::None,
        },
    };
    debug!(listener = %name, %peer, version, resumed,
        fingerprint = identity.as_ref().map(|i| i.id.fingerprint.as_str()).unwrap_or("-"),
        "TLS handshake complete");

    let admission = Admission {
        shared: shared.clone(),
        fingerprint: identity.as_ref().map(|i| i.id.fingerprint_bytes),
        chain,
        digest: tls_state.trust_digest,
    };
    let verify = match class {
        None | Some((Status::NoCredentials, _)) => HeaderValue::from_static("NONE"),
        Some((Status::Authenticated, _)) => HeaderValue::from_static("SUCCESS"),
        Some((_, reason)) => HeaderValue::from_str(&format!(
            "FAILED:{}",
            reason.map_or("none", Failure::as_str)
        ))
        .unwrap_or(HeaderValue::from_static("FAILED")),
    };
    let facts = ClientFacts {
        forwarded_for: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        proto: HeaderValue::from_static("https"),
        verify,
        identity,
    };
    Some(Box::new(Ready {
        io: stream,
        peer,
        listener: (shared, state),
        facts,
        tls: Some(tls_info),
        admission,
        lifeline,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(
        fingerprint: bool,
        ca_failure: Option<Failure>,
        verdict: Option<Verdict>,
    ) -> HandshakeNote {
        HandshakeNote {
            fingerprint: fingerprint.then_some([7; 32]),
            ca_failure,
            verdict,
            ..HandshakeNote::default()
        }
    }

    #[test]
    fn a_policy_refusal_wins_over_the_handshake_failure() {
        let n = note(true, None, None);
        assert_eq!(
            classify(&n, Some(Refusal::Blocked), Some(Failure::AccessDenied)),
            (Status::Blocked, Some(Failure::Refused(Refusal::Blocked)))
        );
    }

    #[test]
    fn no_certificate_is_no_credentials_not_a_failure() {
        assert_eq!(
            classify(&note(false, None, None), None, Some(Failure::NoCertificate)),
            (Status::NoCredentials, None)
        );
        assert_eq!(
            classify(&note(false, None, None), None, None),
            (Status::NoCredentials, None)
        );
    }

    #[test]
    fn a_ca_failure_noted_by_the_verifier_is_a_failure() {
        assert_eq!(
            classify(&note(true, Some(Failure::UnknownCa), None), None, None),
            (Status::Failed, Some(Failure::UnknownCa))
        );
        assert_eq!(
            classify(&note(true, None, None), None, Some(Failure::LegacyProtocol)),
            (Status::UpgradeRequired, Some(Failure::LegacyProtocol))
        );
    }

    #[test]
    fn an_observed_verdict_classifies_the_device() {
        let unapproved = Verdict::Refuse {
            reason: Refusal::Unapproved,
            record: Record::New(crate::registry::DeviceStatus::Pending),
        };
        assert_eq!(
            classify(&note(true, None, Some(unapproved)), None, None),
            (
                Status::Unapproved,
                Some(Failure::Refused(Refusal::Unapproved))
            )
        );
        let admitted = Verdict::Admit {
            why: Admitted::Approved,
            record: Record::Seen,
        };
        assert_eq!(
            classify(&note(true, None, Some(admitted)), None, None),
            (Status::Authenticated, None)
        );
    }
}
