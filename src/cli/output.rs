//! Writing to stdout. A reader that goes away early (`certgate readiness |
//! head -1`) ends the process quietly with success, as `ls | head` does,
//! instead of a panic on the broken pipe that `println!` would raise.

use std::io::Write as _;

/// Writes one line (see the module); any other write error ends the
/// process with a message and failure.
pub(crate) fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("certgate: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the command line, through [`line`].
macro_rules! outln {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
