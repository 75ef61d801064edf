//! Typed errors of the library. Each one names the file, config key, peer or
//! upstream it concerns, so a message in a log tells the admin what to fix.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration that cannot be used: unreadable, malformed, or naming
/// files that are missing or inconsistent.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (unknown key,
    /// wrong type). The message carries line, column and key.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is invalid; `context` is the key path, e.g.
    /// `listener "agents": tls.versions`.
    #[error("{context}: {message}")]
    Invalid {
        /// Where in the config.
        context: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A file the config names cannot be used.
    #[error("{context}: {message}")]
    File {
        /// Where in the config, e.g. `listener "agents": tls.certificate[0].key`.
        context: String,
        /// What is wrong with the file and what to do.
        message: String,
    },
    /// Several independent problems, all reported at once.
    #[error("{} problems:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// Flattens nested [`ConfigError::Many`] into a list of single errors.
    pub fn into_list(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Many(v) => v.into_iter().flat_map(ConfigError::into_list).collect(),
            e => vec![e],
        }
    }

    /// Combines a list of errors into one, or `None` if the list is empty.
    pub fn from_list(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfigError::Many(errors)),
        }
    }
}

/// The gateway failed to start or stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The configuration or a file it names is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error(
        "listener \"{listener}\": cannot listen on {addr}: {source}{}",
        if source.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: stop it, or choose another address)"
        } else {
            ""
        }
    )]
    Bind {
        /// The listener name (or `admin`).
        listener: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// Taking over from (or handing over to) another certgate failed.
    #[error("handover: {0}")]
    Handover(String),
}

impl RunError {
    /// Wraps a handover failure.
    pub fn handover(e: crate::handover::HandoverError) -> RunError {
        RunError::Handover(e.to_string())
    }
}

/// Renders an error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = vec![err];
    let mut source = err.source();
    while let Some(e) = source {
        chain.push(e);
        source = e.source();
    }
    join_chain(chain)
}

/// Joins the messages of an error chain with `: `, leaving out a cause
/// whose words the message already has (many errors name their cause in
/// their own text, and the chain would say it twice).
pub fn join_chain<'a, E>(chain: impl IntoIterator<Item = &'a E>) -> String
where
    E: std::error::Error + ?Sized + 'a,
{
    let mut s = String::new();
    for e in chain {
        let text = e.to_string();
        if s.contains(&text) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&text);
    }
    s
}
