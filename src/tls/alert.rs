//! The alert a TLS 1.2 client gets when it sends no certificate.
//!
//! rustls answers a missing client certificate with `certificate_required`
//! (116) on TLS 1.2 as well as on TLS 1.3, but only TLS 1.3 (RFC 8446)
//! defines that alert. A TLS 1.2 stack sees an unknown alert (curl prints
//! "tlsv13 alert certificate required" on a TLS 1.2-only gateway), and at
//! least one widely used scanner hangs on it. RFC 5246 §7.4.6 says to
//! answer with `handshake_failure` (40), as every OpenSSL-based server does.
//!
//! rustls has no hook to choose that alert, so the handshake's output is
//! watched record by record: a plaintext fatal `certificate_required`
//! alert in a TLS 1.2 record becomes `handshake_failure`. On TLS 1.2 that
//! alert is sent before the server's ChangeCipherSpec, so it is always
//! plaintext there; on TLS 1.3 it is encrypted (record type 23) and passes
//! untouched, keeping 116 as RFC 8446 wants. Nothing else is changed.

/// Record content type of an alert.
const ALERT: u8 = 21;
/// `legacy_record_version` of TLS 1.2 records.
const TLS12: [u8; 2] = [3, 3];
/// Alert level `fatal`.
const FATAL: u8 = 2;
/// `certificate_required` (RFC 8446 §6).
const CERTIFICATE_REQUIRED: u8 = 116;
/// `handshake_failure` (RFC 5246 §7.2).
const HANDSHAKE_FAILURE: u8 = 40;

/// Where the server's output stream stands: inside a record header, or
/// inside a record's payload.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertRewrite {
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current record still to come.
    remaining: usize,
    /// Offset into the current record's payload.
    offset: usize,
    /// The current record is a two-byte plaintext TLS 1.2 fatal alert.
    tls12_alert: bool,
}

impl AlertRewrite {
    /// Passes one output byte, returning the byte to send instead of it.
    fn step(&mut self, b: u8) -> u8 {
        if self.header_len < 5 {
            self.header[self.header_len] = b;
            self.header_len += 1;
            if self.header_len == 5 {
                self.remaining = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.offset = 0;
                self.tls12_alert =
                    self.header[0] == ALERT && self.header[1..3] == TLS12 && self.remaining == 2;
                if self.remaining == 0 {
                    self.header_len = 0;
                }
            }
            return b;
        }
        let out = if self.tls12_alert && self.offset == 1 && b == CERTIFICATE_REQUIRED {
            HANDSHAKE_FAILURE
        } else {
            b
        };
        if self.tls12_alert && self.offset == 0 && b != FATAL {
            self.tls12_alert = false;
        }
        self.offset += 1;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.header_len = 0;
        }
        out
    }

    /// The bytes to write for `buf` (`None`: unchanged), moving past all
    /// of it. After a short write, go back to the state before this call
    /// and [`AlertRewrite::advance`] by what was written.
    pub(crate) fn rewrite(&mut self, buf: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for (i, &b) in buf.iter().enumerate() {
            let o = self.step(b);
            if o != b {
                out.get_or_insert_with(|| buf.to_vec())[i] = o;
            }
        }
        out
    }

    /// Moves past `written` bytes of output.
    pub(crate) fn advance(&mut self, written: &[u8]) {
        for &b in written {
            self.step(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls12_certificate_required_becomes_handshake_failure() {
        let mut w = AlertRewrite::default();
        // A ServerHelloDone record first, then the alert, split oddly.
        let hello_done = [22, 3, 3, 0, 4, 14, 0, 0, 0];
        assert_eq!(w.rewrite(&hello_done), None);
        let alert = [21, 3, 3, 0, 2, 2, 116];
        assert_eq!(w.rewrite(&alert[..3]), None);
        // A short write of the rest: back up, advance by what went out.
        let before = w.clone();
        assert_eq!(w.rewrite(&alert[3..]), Some(vec![0, 2, 2, 40]));
        w = before;
        w.advance(&[0, 2]);
        assert_eq!(w.rewrite(&alert[5..]), Some(vec![2, 40]));
    }

    #[test]
    fn other_records_pass_unchanged() {
        let w = AlertRewrite::default;
        // Encrypted (TLS 1.3 style) record, warning-level alert, other alert.
        assert_eq!(w().rewrite(&[23, 3, 3, 0, 2, 2, 116]), None);
        assert_eq!(w().rewrite(&[21, 3, 3, 0, 2, 1, 116]), None);
        assert_eq!(w().rewrite(&[21, 3, 3, 0, 2, 2, 42]), None);
        assert_eq!(w().rewrite(&[21, 3, 1, 0, 2, 2, 116]), None);
        // 116 as data inside a handshake record.
        assert_eq!(w().rewrite(&[22, 3, 3, 0, 2, 2, 116]), None);
    }
}
