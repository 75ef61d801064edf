//! The `certgate` binary: the command line lives in the library
//! ([`certgate::cli`]), so that everything of substance is tested there.

/// jemalloc, not glibc's malloc: glibc keeps what a burst of handshakes
/// freed resident between the long-lived connections it made, about 5 KiB
/// per idle connection (RESULTS.md, issue 22), and hands it back only on
/// `malloc_trim`, which walks the whole heap under its lock (HAProxy ships
/// `no-memory-trimming` because that stalled a busy process). jemalloc
/// returns unused pages gradually, per arena, from a background thread
/// (its options are compiled in: `.cargo/config.toml`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    certgate::cli::main()
}
