//! BGP messages built byte by byte, without the codec under test: for the scripted peers of the
//! malformed-message tests, the session's unit tests and the fuzz seeds. Every builder returns
//! a whole message (header included) or one attribute / capability / NLRI field.
#![allow(dead_code)]

use std::net::Ipv6Addr;

/// A message of type `kind` around `body`, with a correct header.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// OPEN from `asn` (AS_TRANS in the fixed field when it does not fit) with `caps`.
pub fn open(asn: u32, hold: u16, id: [u8; 4], caps: &[Vec<u8>]) -> Vec<u8> {
    let mut params = Vec::new();
    for c in caps {
        params.push(2);
        params.push(c.len() as u8);
        params.extend_from_slice(c);
    }
    let mut body = vec![4];
    body.extend_from_slice(&u16::try_from(asn).unwrap_or(23456).to_be_bytes());
    body.extend_from_slice(&hold.to_be_bytes());
    body.extend_from_slice(&id);
    body.push(params.len() as u8);
    body.extend_from_slice(&params);
    message(1, &body)
}

/// The usual router OPEN: MP v4 and v6, route refresh, 4-octet AS, and `gr` when given.
pub fn router_open(asn: u32, hold: u16, id: [u8; 4], gr: Option<Vec<u8>>) -> Vec<u8> {
    let mut caps = vec![
        cap_mp(1, 1),
        cap_mp(2, 1),
        cap_route_refresh(),
        cap_as4(asn),
    ];
    caps.extend(gr);
    open(asn, hold, id, &caps)
}

/// Multiprotocol capability.
pub fn cap_mp(afi: u16, safi: u8) -> Vec<u8> {
    let mut c = vec![1, 4];
    c.extend_from_slice(&afi.to_be_bytes());
    c.extend_from_slice(&[0, safi]);
    c
}

/// Route refresh capability.
pub fn cap_route_refresh() -> Vec<u8> {
    vec![2, 0]
}

/// 4-octet AS capability.
pub fn cap_as4(asn: u32) -> Vec<u8> {
    let mut c = vec![65, 4];
    c.extend_from_slice(&asn.to_be_bytes());
    c
}

/// Graceful restart capability: restart time, R bit, and (AFI, SAFI, F bit) tuples.
pub fn cap_gr(restart_time: u16, restarting: bool, families: &[(u16, u8, bool)]) -> Vec<u8> {
    let mut v = (restart_time & 0x0fff | if restarting { 0x8000 } else { 0 })
        .to_be_bytes()
        .to_vec();
    for (afi, safi, f) in families {
        v.extend_from_slice(&afi.to_be_bytes());
        v.push(*safi);
        v.push(if *f { 0x80 } else { 0 });
    }
    let mut c = vec![64, v.len() as u8];
    c.extend_from_slice(&v);
    c
}

/// GR with IPv4 and IPv6 unicast, forwarding kept (F bit) as given.
pub fn gr_both(restart_time: u16, restarting: bool, forwarding: bool) -> Vec<u8> {
    cap_gr(
        restart_time,
        restarting,
        &[(1, 1, forwarding), (2, 1, forwarding)],
    )
}

/// KEEPALIVE.
pub fn keepalive() -> Vec<u8> {
    message(4, &[])
}

/// NOTIFICATION.
pub fn notification(code: u8, subcode: u8, data: &[u8]) -> Vec<u8> {
    let mut body = vec![code, subcode];
    body.extend_from_slice(data);
    message(3, &body)
}

/// UPDATE from its three fields.
pub fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

/// One path attribute (extended length when needed).
pub fn attr(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    if value.len() > 255 {
        a.push(flags | 0x10);
        a.push(kind);
        a.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        a.push(flags);
        a.push(kind);
        a.push(value.len() as u8);
    }
    a.extend_from_slice(value);
    a
}

/// ORIGIN (0 IGP, 1 EGP, 2 incomplete).
pub fn origin(v: u8) -> Vec<u8> {
    attr(0x40, 1, &[v])
}

/// AS_PATH of AS_SEQUENCEs, 4-octet ASes: one for a usual path, a new one every 255 ASes
/// (a segment's most).
pub fn as_path(path: &[u32]) -> Vec<u8> {
    let mut v = Vec::new();
    for segment in path.chunks(255) {
        v.extend_from_slice(&[2, segment.len() as u8]);
        for a in segment {
            v.extend_from_slice(&a.to_be_bytes());
        }
    }
    attr(0x40, 2, &v)
}

/// AS_PATH of one AS_SEQUENCE, 2-octet ASes (a peer without the 4-octet capability).
pub fn as_path2(path: &[u16]) -> Vec<u8> {
    let mut v = vec![2, path.len() as u8];
    for a in path {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(0x40, 2, &v)
}

/// NEXT_HOP.
pub fn next_hop(a: [u8; 4]) -> Vec<u8> {
    attr(0x40, 3, &a)
}

/// MULTI_EXIT_DISC.
pub fn med(v: u32) -> Vec<u8> {
    attr(0x80, 4, &v.to_be_bytes())
}

/// LOCAL_PREF.
pub fn local_pref(v: u32) -> Vec<u8> {
    attr(0x40, 5, &v.to_be_bytes())
}

/// COMMUNITIES.
pub fn communities(c: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (a, b) in c {
        v.extend_from_slice(&a.to_be_bytes());
        v.extend_from_slice(&b.to_be_bytes());
    }
    attr(0xc0, 8, &v)
}

/// LARGE_COMMUNITY.
pub fn large_communities(c: &[(u32, u32, u32)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (a, b, d) in c {
        for x in [a, b, d] {
            v.extend_from_slice(&x.to_be_bytes());
        }
    }
    attr(0xc0, 32, &v)
}

/// IPv4 NLRI (or withdrawn routes) field.
pub fn nlri4(prefixes: &[([u8; 4], u8)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (a, len) in prefixes {
        v.push(*len);
        v.extend_from_slice(&a[..usize::from(len.div_ceil(8))]);
    }
    v
}

/// IPv6 prefixes in NLRI encoding.
pub fn nlri6(prefixes: &[(Ipv6Addr, u8)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (a, len) in prefixes {
        v.push(*len);
        v.extend_from_slice(&a.octets()[..usize::from(len.div_ceil(8))]);
    }
    v
}

/// MP_REACH_NLRI for IPv6 unicast.
pub fn mp_reach6(nh: Ipv6Addr, prefixes: &[(Ipv6Addr, u8)]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(&nh.octets());
    v.push(0);
    v.extend_from_slice(&nlri6(prefixes));
    attr(0x80, 14, &v)
}

/// MP_UNREACH_NLRI for IPv6 unicast.
pub fn mp_unreach6(prefixes: &[(Ipv6Addr, u8)]) -> Vec<u8> {
    let mut v = vec![0, 2, 1];
    v.extend_from_slice(&nlri6(prefixes));
    attr(0x80, 15, &v)
}

/// The usual attributes: ORIGIN IGP, AS path, NEXT_HOP.
pub fn basic_attrs(path: &[u32], nh: [u8; 4]) -> Vec<u8> {
    [origin(0), as_path(path), next_hop(nh)].concat()
}

/// An UPDATE announcing IPv4 prefixes with the usual attributes.
pub fn announce4(path: &[u32], nh: [u8; 4], prefixes: &[([u8; 4], u8)]) -> Vec<u8> {
    update(&[], &basic_attrs(path, nh), &nlri4(prefixes))
}

/// An UPDATE withdrawing IPv4 prefixes.
pub fn withdraw4(prefixes: &[([u8; 4], u8)]) -> Vec<u8> {
    update(&nlri4(prefixes), &[], &[])
}

/// End-of-RIB for IPv4 unicast.
pub fn eor4() -> Vec<u8> {
    update(&[], &[], &[])
}

/// End-of-RIB for IPv6 unicast.
pub fn eor6() -> Vec<u8> {
    update(&[], &attr(0x80, 15, &[0, 2, 1]), &[])
}
