//! Listening on several addresses (`--addr` given more than once): every
//! one serves, and all of them reach the same hub.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::*;
use tungstenite::Message;

/// Whether this host can listen on IPv6 loopback (some containers cannot).
fn ipv6() -> bool {
    let ok = TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("no IPv6 loopback here: skipping");
    }
    ok
}

#[test]
fn clients_on_two_addresses_share_the_rooms() {
    let server = start(config().extra_addrs(vec!["127.0.0.2:0".parse().unwrap()]));
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], server.local_addr());
    let events = server.events();
    let mut a = ws(addrs[0], "/ws/both");
    let mut b = ws(addrs[1], "/ws/both");
    joined(&events, 2);
    text(&mut a, "from one address");
    assert_eq!(next(&mut b), Message::text("from one address"));
    text(&mut b, "from the other");
    assert_eq!(next(&mut a), Message::text("from the other"));
    for addr in addrs {
        assert_eq!(status(&get(addr, "/healthz", "")), 200);
    }
}

#[test]
fn any_ipv4_and_any_ipv6_on_one_port_do_not_collide() {
    if !ipv6() {
        return;
    }
    // A free port for both families (`[::]:P` alone would take IPv4's P too).
    let port = TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let v4: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::]:{port}").parse().unwrap();
    let server = start(config().addr(v4).extra_addrs(vec![v6]));
    assert_eq!(server.local_addrs(), &[v4, v6]);
    let events = server.events();
    let mut a = ws(format!("127.0.0.1:{port}").parse().unwrap(), "/ws/dual");
    let mut b = ws(format!("[::1]:{port}").parse().unwrap(), "/ws/dual");
    joined(&events, 2);
    text(&mut b, "over IPv6");
    assert_eq!(next(&mut a), Message::text("over IPv6"));
    drop(server);
    // Both listeners are closed once the server is gone.
    assert!(TcpListener::bind(v4).is_ok());
}

#[test]
fn an_address_already_taken_fails_the_start_with_its_name() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let err = match wshub::Server::start(config().extra_addrs(vec![addr])) {
        Ok(_) => panic!("started on a taken address"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");
}
