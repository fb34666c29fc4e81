//! `wshub serve`: logging, file limit, signals, and the server until
//! SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use log::{error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{ServeArgs, logging};
use wshub::Server;

pub(super) fn run(args: &ServeArgs) -> ExitCode {
    logging::init(args.log_level, args.log_format);
    raise_file_limit();
    // Before the server starts: a SIGTERM that comes as soon as it listens
    // (a supervisor, a test) must shut it down cleanly, not kill it.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = args.config();
    if let Some(path) = &args.auth_secret_file {
        match super::read_secret(path) {
            Ok(secret) => config = config.auth_secret(secret),
            Err(e) => {
                error!("cannot start: --auth-secret-file {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.api_key_file {
        match super::read_secret(path).map(|key| String::from_utf8(key.bytes().to_vec()).ok()) {
            Ok(Some(key)) => config = config.api_key(key),
            Ok(None) => {
                error!(
                    "cannot start: --api-key-file {}: the key is not UTF-8",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                error!("cannot start: --api-key-file {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    log_urls(server.local_addr());
    let handle = server.handle();
    std::thread::spawn(move || {
        let mut seen = 0;
        for signal in signals.forever() {
            seen += 1;
            if seen == 1 {
                info!("signal {signal}: shutting down");
                handle.shutdown();
            } else {
                // A second Ctrl-C: the user does not want to wait.
                std::process::exit(130);
            }
        }
    });
    server.run();
    ExitCode::SUCCESS
}

/// Each client is one file descriptor: take the hard limit (the server's
/// start-up line then says how many clients every limit allows).
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open-file limit raised to {limit}"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
}

fn log_urls(addr: SocketAddr) {
    let port = addr.port();
    let any = match addr.ip() {
        IpAddr::V4(ip) => ip.is_unspecified(),
        IpAddr::V6(ip) => ip.is_unspecified(),
    };
    if any {
        info!(
            "open http://localhost:{port}/ (or http://<this machine's address>:{port}/ from another device)"
        );
    } else {
        info!("open http://{addr}/");
    }
}
