"""The bench clients' TLS: TLS 1.2 with the harness's device certificate,
no tickets (every full handshake is one), the server not verified (loopback,
the harness's own PKI)."""
import ssl


def context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    ctx.options |= ssl.OP_NO_TICKET
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx
