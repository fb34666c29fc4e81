//! The `wshub` binary: `wshub serve` runs the hub, `wshub client` talks to
//! one. Everything lives in the library's `cli` module.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    wshub::cli::run(wshub::cli::Cli::parse())
}
