//! The `certgate` command line: parse the arguments, set up logging, run
//! the subcommand, map its error to an exit code. `main.rs` only calls
//! [`main`]. The one place that uses `anyhow`: errors from the library are
//! typed; here they are printed.
//!
//! # Layout
//!
//! - `args` — subcommands and flags (clap).
//! - `commands` — `check`, `run`, `devices`, `readiness`.
//! - `devices` — the client of the admin API (`devices`, `readiness`,
//!   `revocation`).
//! - `demo` — `certgate demo`.
//! - `logging` — diagnostics and the access log.
//! - `output` — stdout that survives `| head`.

#[macro_use]
mod output;
mod args;
mod commands;
mod demo;
mod devices;
mod logging;
mod registry;

use std::process::ExitCode;

use clap::Parser as _;

use args::{Cli, Command};
use commands::{api_target, check, current_thread, run, run_devices, target};
use demo::run_demo;

/// Writes generated text to stdout (a closed pipe ends quietly).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    output::line(format_args!(
        "{}",
        String::from_utf8_lossy(bytes).trim_end()
    ));
    Ok(())
}

/// Runs the command line given to the process and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run {
            config,
            threads,
            takeover,
        } => run(&config, threads, takeover),
        Command::Demo { dir, listen, admin } => run_demo(&dir, listen, admin),
        Command::Devices {
            config,
            admin,
            token_file,
            client_cert,
            client_key,
            json,
            action,
        } => target(config, admin, token_file, client_cert.zip(client_key))
            .and_then(|t| run_devices(&t, json, action)),
        Command::Readiness {
            listener,
            window,
            api,
        } => api_target(&api).and_then(|t| {
            current_thread()?.block_on(devices::readiness(
                &t,
                listener.as_deref(),
                &window,
                api.json,
            ))
        }),
        Command::Revocation { api } => api_target(&api)
            .and_then(|t| current_thread()?.block_on(devices::revocation(&t, api.json))),
        Command::Registry {
            action: args::RegistryCommand::Migrate { config },
        } => registry::migrate(&config),
        Command::Registry {
            action:
                args::RegistryCommand::Copy {
                    from,
                    to,
                    audit_log,
                    database_ca,
                    replace,
                },
        } => registry::copy(
            &from,
            &to,
            audit_log.as_deref(),
            database_ca.as_deref(),
            replace,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "certgate", &mut out);
            write_stdout(&out)
        }
        Command::Man { dir: Some(dir) } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(cmd, &dir))
                .map_err(|e| anyhow::anyhow!("{}: cannot write the man pages: {e}", dir.display()))
        }
        Command::Man { dir: None } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| write_stdout(&out))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certgate: {}", crate::error::join_chain(e.chain()));
            ExitCode::FAILURE
        }
    }
}
