//! SHA-256 digests over several inputs (trust material, client chains),
//! as fixed-size keys.

/// The 32 bytes of a finished SHA-256 context.
pub(super) fn finish(ctx: aws_lc_rs::digest::Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
