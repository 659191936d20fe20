//! Arbitrary `Forwarded` / `X-Forwarded-For` values from a trusted proxy: the parsers never panic,
//! and the resolved client is either the peer, a trusted hop, or an address present in the value.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ravelin_ratelimit::client_ip::{
    ClientIpResolver, ForwardedHeader, parse_forwarded, parse_x_forwarded_for,
};

fuzz_target!(|data: &[u8]| {
    let forwarded = parse_forwarded(data);
    let xff = parse_x_forwarded_for(data);
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let peer = SocketAddr::from(([10, 0, 0, 1], 443));
    let trusted = vec![
        "10.0.0.0/8".parse().expect("cidr"),
        "2001:db8::/32".parse().expect("cidr"),
    ];
    for (header, name, seen) in [
        (ForwardedHeader::Forwarded, "forwarded", &forwarded),
        (ForwardedHeader::XForwardedFor, "x-forwarded-for", &xff),
    ] {
        let resolver = ClientIpResolver::new(trusted.clone(), header);
        let mut headers = HeaderMap::new();
        headers.insert(name, value.clone());
        let client = resolver
            .resolve(Some(peer), &headers)
            .expect("a peer was given");
        let present = seen
            .iter()
            .flatten()
            .any(|ip: &IpAddr| ip.to_canonical() == client);
        assert!(
            client == peer.ip() || resolver.is_trusted(client) || present,
            "{client} came from nowhere"
        );
        // An untrusted peer is always its own client.
        let outsider = SocketAddr::from(([192, 0, 2, 1], 443));
        assert_eq!(
            resolver.resolve(Some(outsider), &headers),
            Some(outsider.ip())
        );
    }
});
