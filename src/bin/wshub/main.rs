//! The `wshub` binary: `wshub serve` runs the hub, `wshub client` talks to
//! one, `wshub bench` measures this or any other WebSocket server. The
//! command line lives in `cli/`, the load generator in `bench/`; both are
//! this binary's own and use only the library's public API.

mod bench;
mod cli;
mod file_frame;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let cli::Command::Serve(_) = cli.command {
        malloc::return_large_buffers();
    }
    cli::run(cli)
}

/// glibc keeps freed memory in per-thread arenas, and raises its mmap
/// threshold as large chunks are freed, so the buffers of large messages
/// (up to `--max-message-bytes` each) would stay resident after use and the
/// process's RSS would not follow the memory budget. A fixed threshold
/// sends every buffer over 128 KiB to mmap and back to the system on free.
/// glibc reads it only at start-up, so the server sets it and executes
/// itself again, once (an operator's own `GLIBC_TUNABLES` setting of it
/// wins).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc {
    use std::os::unix::process::CommandExt;

    const TUNABLE: &str = "glibc.malloc.mmap_threshold";
    const VALUE: &str = "glibc.malloc.mmap_threshold=131072";

    pub(crate) fn return_large_buffers() {
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains(TUNABLE) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let tunables = if current.is_empty() {
            VALUE.to_string()
        } else {
            format!("{current}:{VALUE}")
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        // Only a failed exec returns: run with the allocator as it is.
        eprintln!("wshub: could not set {TUNABLE} ({err}); large buffers may stay resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod malloc {
    pub(crate) fn return_large_buffers() {}
}
