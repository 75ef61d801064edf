//! One reload attempt: load the config, skip it when no watched byte
//! changed, build, apply, and record the outcome (log, metrics, systemd
//! status, the refused digest that is not retried).

use tracing::{debug, error, info, warn};

use crate::clock::now_unix;
use crate::config::Settings;
use crate::control::{Cause, ReloadOutcome, ReloadReport};
use crate::error::{ConfigError, RunError};

use super::apply::Phase;
use super::build::Built;
use super::controller::Controller;
use super::watch::files_digest;

/// Whether a reload runs when the watched files are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rebuild {
    /// Always (SIGHUP, the admin API: the admin asked).
    Always,
    /// Only when some watched file's bytes changed.
    IfChanged,
}

/// What a reload that fails means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// Report it: log, `certgate_reloads_total{result="failure"}`, alert.
    Report,
    /// A write may still be in progress (a cert whose key follows): wait
    /// quietly, the settle time decides.
    Settle,
}

impl Controller {
    /// Loads the configuration and its files and makes them the running
    /// state, unless `rebuild` is [`Rebuild::IfChanged`] and no watched
    /// file changed since the state in force (or since the last refused
    /// attempt). With [`OnFailure::Settle`] (a first attempt right after a
    /// file event) a failure is returned without being recorded, logged as
    /// refused or remembered, so the caller can give the writer [`SETTLE`]
    /// to finish and try again.
    pub(super) async fn reload(
        &mut self,
        cause: Cause,
        rebuild: Rebuild,
        failure: OnFailure,
    ) -> ReloadOutcome {
        let force = rebuild == Rebuild::Always;
        let settling = failure == OnFailure::Settle;
        let started = std::time::Instant::now();
        let source = self.settings.source.clone();
        let result = match Settings::load(&source) {
            Ok(settings) => {
                let digest = files_digest(&settings.files());
                if !force && digest == self.digest && self.refused.is_some() {
                    // A refused change was undone (files restored, a deleted
                    // cert put back): what is on disk is again what runs, so
                    // the "last reload failed" signal must clear, or the
                    // admin's alert would keep firing for a fixed problem.
                    self.refused = None;
                    self.metrics.reload(true, now_unix());
                    info!(
                        cause = cause.as_str(),
                        "watched files are back to the configuration in force; reload state is successful again"
                    );
                    return Ok(ReloadReport::default());
                }
                if !force && (digest == self.digest || Some(digest) == self.refused) {
                    debug!(
                        cause = cause.as_str(),
                        "watched files unchanged; nothing to reload"
                    );
                    return Ok(ReloadReport::default());
                }
                crate::notify::reloading();
                let reuse = self.reuse();
                let built = Built::new(
                    &settings,
                    Some(&reuse),
                    self.registry.as_ref(),
                    Some(&self.metrics),
                );
                let result = match built {
                    Ok(built) => self
                        .apply(settings, built, &mut Vec::new(), Phase::Reload)
                        .await
                        .map(|r| (r, digest))
                        .map_err(|e| (e, Some(digest))),
                    Err(e) => Err((RunError::Config(e), Some(digest))),
                };
                crate::notify::ready(match &result {
                    Ok(_) => "serving; last reload succeeded",
                    Err(_) if settling => {
                        "serving; waiting for changed files to be written completely"
                    }
                    Err(_) => "serving; last reload FAILED, previous configuration in force",
                });
                result
            }
            Err(e) => {
                let digest = files_digest(std::slice::from_ref(&source));
                if !force && Some(digest) == self.refused {
                    return Err(RunError::Config(e));
                }
                Err((RunError::Config(e), Some(digest)))
            }
        };
        match result {
            Ok((report, digest)) => {
                self.check_crls();
                self.digest = digest;
                self.refused = None;
                // The files may have moved (config change, new symlink
                // targets): watch where they are now.
                self.watcher.update(&self.settings.files());
                self.metrics.reload(true, now_unix());
                info!(
                    cause = cause.as_str(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    changes = %if report.changes.is_empty() { "none".to_string() } else { report.changes.join("; ") },
                    "reloaded {}", source.display()
                );
                Ok(report)
            }
            Err((e, _)) if settling => {
                debug!(cause = cause.as_str(), problem = %e,
                    "changed files do not load yet; waiting for the rest of the write");
                Err(e)
            }
            Err((e, digest)) => {
                // (Unchanged refused bytes returned early above.)
                self.refused = digest;
                self.metrics.reload(false, now_unix());
                let problems = match e {
                    RunError::Config(c) => {
                        let list = c.into_list();
                        for p in &list {
                            error!(cause = cause.as_str(), problem = %p, "reload refused");
                        }
                        RunError::Config(ConfigError::from_list(list).unwrap_or(
                            ConfigError::Invalid {
                                context: source.display().to_string(),
                                message: "unknown problem".into(),
                            },
                        ))
                    }
                    other => {
                        error!(cause = cause.as_str(), problem = %other, "reload refused");
                        other
                    }
                };
                warn!(
                    "the previous configuration and certificates stay in force; fix the file(s) named above \
                     (a corrected file is picked up on its next write, or run `kill -HUP` / POST /api/reload)"
                );
                Err(problems)
            }
        }
    }
}
