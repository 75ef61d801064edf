//! Records the commit certgate is built from (`certgate --version`,
//! `certgate_build_info{commit}`): `git rev-parse` when the source is a git
//! checkout, else `CERTGATE_COMMIT` from the environment (a source tarball
//! built by a packager), else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CERTGATE_COMMIT");
    // A new commit moves HEAD or the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{r}");
    }
    let commit = std::env::var("CERTGATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CERTGATE_COMMIT={commit}");
}
