//! The `wshub` binary: `wshub serve` runs the hub, `wshub client` talks to
//! one, `wshub bench` measures this or any other WebSocket server. The
//! command line lives in `cli/`, the load generator in `bench/`; both are
//! this binary's own and use only the library's public API.

mod bench;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
