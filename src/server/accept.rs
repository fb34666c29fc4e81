//! The listener loop, and what happens to each accepted socket before its
//! own thread takes over: `TCP_NODELAY`, the write timeout, registration
//! for forced shutdown, and a 503 when no thread can be had (counted, and
//! logged once a second with the others refused: `Shared::refused`).
//!
//! May touch: the listener, the accepted socket, `Shared`'s registry and
//! refusal count, the metrics (a refused request).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use log::{debug, warn};
use tungstenite::http::StatusCode;
use tungstenite::protocol::Role;

use super::budget::Registered;
use super::conn::Conn;
use super::shared::Shared;
use crate::http;
use crate::id::ClientId;
use crate::session::wire::Wire;

/// Binds every address of the configuration, `addr` first, with the
/// configured backlog. An IPv6 address is bound IPv6-only when an IPv4
/// address is also listed (otherwise `[::]:P` would take `0.0.0.0:P` too,
/// and binding that would fail); alone, it keeps the system's default.
pub(super) fn bind_all(config: &crate::Config) -> std::io::Result<Vec<TcpListener>> {
    let addrs: Vec<SocketAddr> = std::iter::once(config.addr)
        .chain(config.extra_addrs.iter().copied())
        .collect();
    let any_v4 = addrs.iter().any(SocketAddr::is_ipv4);
    addrs
        .iter()
        .map(|addr| {
            bind(*addr, any_v4, config.listen_backlog)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        })
        .collect()
}

#[cfg(unix)]
fn bind(addr: SocketAddr, v6_only: bool, backlog: u32) -> std::io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // As std does: a restarted server can bind while old connections linger.
    sockopt::set_socket_reuseaddr(&socket, true)?;
    if addr.is_ipv6() && v6_only {
        sockopt::set_ipv6_v6only(&socket, true)?;
    }
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from(socket))
}

#[cfg(not(unix))]
fn bind(addr: SocketAddr, _v6_only: bool, _backlog: u32) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// The address that reaches our own listener.
pub(super) fn wake_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
        }
        _ => bound,
    }
}

pub(super) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => accept(stream, &shared),
            Err(e) => {
                // Counted, and logged once a second with the count.
                shared.refused(&format!("accept failed: {e}"));
                // Out of file descriptors: accept would fail again at once;
                // back off briefly instead of spinning.
                if e.raw_os_error().is_some_and(|c| c == 23 || c == 24) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    debug!("acceptor stopped");
}

fn accept(stream: TcpStream, shared: &Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(e) => {
            debug!("connection {id} gone before it started: {e}");
            return;
        }
    };
    // Small frames must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let wire = match Wire::new(stream, Role::Server, shared.config.write_timeout) {
        Ok(wire) => Arc::new(wire),
        Err(e) => {
            warn!(client = id, peer:% = peer; "connection {id} from {peer}: {e}");
            return;
        }
    };
    shared.lock().sockets.insert(id, wire.clone());
    let registered = Registered {
        shared: shared.clone(),
        id,
    };
    let conn = Conn {
        shared: shared.clone(),
        wire: wire.clone(),
        id: ClientId(id),
        peer,
        subject: None,
    };
    let serve = move || {
        if let Some(session) = conn.serve(registered) {
            session.run();
        }
    };
    if let Err(e) = shared.spawn(format!("wshub-conn-{id}"), serve) {
        // At the ceiling: a 503 for each, a log line a second for all.
        debug!(client = id, peer:% = peer; "no thread for {peer}: {e}");
        shared.metrics.http_refused(503, false);
        shared.refused(&format!("no thread for a new connection: {e}"));
        let _ = http::respond(
            wire.stream(),
            StatusCode::SERVICE_UNAVAILABLE,
            &[("Retry-After", "5")],
            b"server overloaded\n",
            false,
            false,
        );
        // The response before the end: the request is never read, and a
        // close with unread bytes sends a reset.
        wire.shutdown(Shutdown::Write);
    }
}
