//! The `certgate` binary: the command line lives in the library
//! ([`certgate::cli`]), so that everything of substance is tested there.

fn main() -> std::process::ExitCode {
    certgate::cli::main()
}
