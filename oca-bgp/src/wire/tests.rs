//! The codec adapter against messages built byte by byte: RFC 4271 §6.1 header errors, the
//! OPEN and UPDATE reading, and RFC 7606's table case by case (docs/bgp.md lists it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::BytesMut;

use super::*;

use crate::test_msg as msg;

fn frame(bytes: &[u8]) -> Result<Option<Message>, Notification> {
    next_message(&mut BytesMut::from(bytes))
}

fn header_error(bytes: &[u8]) -> (u8, u8, Vec<u8>) {
    let n = frame(bytes).expect_err("a header error");
    (n.code, n.subcode, n.data)
}

fn ebgp() -> UpdateContext {
    UpdateContext {
        four_octet_as: true,
        ibgp: false,
        local_as: 64501,
    }
}

fn outcome_with(bytes: &[u8], ctx: UpdateContext) -> Result<UpdateOutcome, Notification> {
    match frame(bytes) {
        Ok(Some(Message::Update(u))) => parse_update(&u, ctx),
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn outcome(bytes: &[u8]) -> Result<UpdateOutcome, Notification> {
    outcome_with(bytes, ebgp())
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn header_errors_carry_their_rfc_4271_codes_and_data() {
    let mut bad_marker = msg::keepalive();
    bad_marker[3] = 0;
    assert_eq!(header_error(&bad_marker), (1, 1, vec![]));
    let mut short = msg::keepalive();
    short[17] = 18;
    assert_eq!(header_error(&short), (1, 2, vec![0, 18]));
    let mut long = msg::keepalive();
    long[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(header_error(&long), (1, 2, vec![0x10, 0x01]));
    assert_eq!(header_error(&msg::message(9, &[])), (1, 3, vec![9]));
    assert_eq!(header_error(&msg::message(4, &[0])), (1, 2, vec![0, 20]));
    assert_eq!(header_error(&msg::message(1, &[4; 9])), (1, 2, vec![0, 28]));
    assert_eq!(header_error(&msg::message(3, &[6])), (1, 2, vec![0, 20]));
    assert_eq!(
        header_error(&msg::message(2, &[0, 0, 0])),
        (1, 2, vec![0, 22])
    );
    // RFC 7313 §5: a long ROUTE-REFRESH is its own error, with the message as data.
    let rr = msg::message(5, &[0, 1, 0, 1, 9]);
    assert_eq!(header_error(&rr), (7, 1, rr.clone()));
}

#[test]
fn the_header_is_judged_before_the_body_arrives() {
    let mut long = msg::keepalive();
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert!(frame(&long[..19]).is_err());
    let open = msg::router_open(64500, 90, [10, 250, 0, 1], None);
    let mut buf = BytesMut::from(&open[..30]);
    assert!(matches!(next_message(&mut buf), Ok(None)));
    assert_eq!(
        buf.len(),
        30,
        "nothing consumed before the whole message is there"
    );
    buf.extend_from_slice(&open[30..]);
    buf.extend_from_slice(&msg::keepalive());
    assert!(matches!(next_message(&mut buf), Ok(Some(Message::Open(_)))));
    assert!(matches!(
        next_message(&mut buf),
        Ok(Some(Message::Keepalive))
    ));
    assert!(buf.is_empty());
}

#[test]
fn an_open_is_read_with_its_capabilities() {
    let m = msg::router_open(
        64500,
        90,
        [10, 250, 0, 1],
        Some(msg::gr_both(120, true, true)),
    );
    let Ok(Some(Message::Open(o))) = frame(&m) else {
        panic!("not an OPEN");
    };
    assert_eq!(o.asn, 64500);
    assert_eq!(o.hold_time, 90);
    assert_eq!(o.router_id, Ipv4Addr::new(10, 250, 0, 1));
    assert!(o.four_octet_as && o.multiprotocol && o.route_refresh);
    assert_eq!(o.families, Family::ALL.to_vec());
    let gr = o.graceful_restart.unwrap();
    assert_eq!(gr.restart_time, 120);
    assert!(gr.restarting);
    assert_eq!(
        gr.families,
        vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, true)]
    );
    // A 4-octet AS arrives as AS_TRANS plus the capability.
    let m = msg::router_open(4_200_000_000, 90, [10, 250, 0, 1], None);
    let Ok(Some(Message::Open(o))) = frame(&m) else {
        panic!("not an OPEN");
    };
    assert_eq!(o.asn, 4_200_000_000);
}

#[test]
fn a_bad_open_gets_an_open_error() {
    let mut m = msg::router_open(64500, 90, [10, 250, 0, 1], None);
    m[19] = 3;
    let n = frame(&m).unwrap_err();
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    // Optional parameters longer than the message.
    let mut m = msg::router_open(64500, 90, [10, 250, 0, 1], None);
    m[28] += 1;
    assert_eq!(frame(&m).unwrap_err().code, 2);
}

#[test]
fn our_messages_read_back() {
    let open = encode_open(&OpenParams {
        local_as: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 250, 0, 2),
        families: Family::ALL.to_vec(),
        restart_time: 120,
    });
    let Ok(Some(Message::Open(o))) = frame(&open) else {
        panic!("our OPEN does not read back");
    };
    assert_eq!(o.asn, 4_200_000_001);
    let gr = o.graceful_restart.unwrap();
    assert!(gr.families.is_empty() && !gr.restarting && gr.restart_time == 120);
    assert!(matches!(
        frame(&encode_keepalive()),
        Ok(Some(Message::Keepalive))
    ));
    assert!(matches!(
        frame(&encode_route_refresh(Family::Ipv6Unicast)),
        Ok(Some(Message::RouteRefresh { afi: 2, safi: 1 }))
    ));
    for f in Family::ALL {
        assert_eq!(
            outcome(&encode_end_of_rib(f)),
            Ok(UpdateOutcome::EndOfRib(f))
        );
    }
    let n = Notification::max_prefixes(Family::Ipv4Unicast, 20_000);
    let Ok(Some(Message::Notification(back))) = frame(&n.encode()) else {
        panic!("our NOTIFICATION does not read back");
    };
    assert_eq!(back, n);
    assert_eq!(back.data, vec![0, 1, 1, 0, 0, 0x4e, 0x20]);
    assert!(back.to_string().contains("Maximum Number of Prefixes"));
}

#[test]
fn a_route_carries_every_attribute_steering_uses() {
    let attrs = [
        msg::origin(1),
        msg::as_path(&[64500, 64510]),
        msg::next_hop([10, 250, 0, 1]),
        msg::med(50),
        msg::local_pref(200),
        msg::communities(&[(64500, 100), (65535, 65281)]),
        msg::large_communities(&[(64500, 1, 2)]),
    ]
    .concat();
    let m = msg::update(
        &msg::nlri4(&[([192, 0, 2, 0], 24)]),
        &attrs,
        &msg::nlri4(&[([198, 51, 100, 0], 24), ([203, 0, 113, 0], 25)]),
    );
    let Ok(UpdateOutcome::Routes {
        withdrawn,
        announced,
        discarded,
        truncated: false,
    }) = outcome(&m)
    else {
        panic!("{:?}", outcome(&m));
    };
    assert_eq!(withdrawn, vec![p("192.0.2.0/24")]);
    assert!(discarded.is_empty());
    assert_eq!(announced.len(), 2);
    let r = &announced[1];
    assert_eq!(r.prefix, p("203.0.113.0/25"));
    assert_eq!(r.next_hop, "10.250.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(r.attrs.as_path, vec![64500, 64510]);
    assert_eq!(r.attrs.origin, Origin::Egp);
    assert_eq!(r.attrs.med, Some(50));
    assert_eq!(
        r.attrs.local_pref, None,
        "LOCAL_PREF from an external neighbour is ignored"
    );
    assert_eq!(r.attrs.communities, vec![(64500, 100), (65535, 65281)]);
    assert_eq!(r.attrs.large_communities, vec![(64500, 1, 2)]);
    // Serialised flat, as the fill agent's tests and the probe's readers expect.
    let json = serde_json::to_string(r).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"prefix":"203.0.113.0/25","next_hop":"10.250.0.1","as_path":[64500,64510],"#,
            r#""origin":"egp","med":50,"local_pref":null,"communities":[[64500,100],[65535,65281]],"#,
            r#""large_communities":[[64500,1,2]]}"#
        )
    );
    assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), *r);
    // From an internal neighbour it counts.
    let ibgp = UpdateContext {
        ibgp: true,
        ..ebgp()
    };
    let Ok(UpdateOutcome::Routes { announced, .. }) = outcome_with(&m, ibgp) else {
        panic!("iBGP");
    };
    assert_eq!(announced[0].attrs.local_pref, Some(200));
}

#[test]
fn the_routes_of_one_update_share_one_allocation_of_its_attributes() {
    // The review's case: a full-size UPDATE with 2.4 KB of communities and 500 short
    // prefixes (/9s: three bytes each).
    let prefixes: Vec<([u8; 4], u8)> = (0..500u32)
        .map(|i| ([(i / 2) as u8, if i % 2 == 1 { 128 } else { 0 }, 0, 0], 9))
        .collect();
    let many: Vec<(u16, u16)> = (0..600).map(|i| (64500, i)).collect();
    let attrs = [
        msg::basic_attrs(&[64500], [10, 250, 0, 1]),
        msg::communities(&many),
    ]
    .concat();
    let m = msg::update(&[], &attrs, &msg::nlri4(&prefixes));
    assert!(m.len() > 3800 && m.len() <= MAX_MESSAGE_LEN, "{}", m.len());
    let Ok(UpdateOutcome::Routes {
        announced,
        truncated,
        ..
    }) = outcome(&m)
    else {
        panic!("{:?}", outcome(&m));
    };
    assert_eq!(announced.len(), 500);
    let shared = &announced[0].attrs;
    assert!(announced.iter().all(|r| Arc::ptr_eq(&r.attrs, shared)));
    assert_eq!(Arc::strong_count(shared), 500, "one allocation, 500 owners");
    // And the communities were cut to their bound, the first ones kept.
    assert!(truncated);
    assert_eq!(shared.communities, many[..PathAttributes::MAX_COMMUNITIES]);
}

#[test]
fn attribute_lists_are_cut_to_their_bounds_and_the_path_length_kept() {
    // 300 ASNs, ours (64501) at the 280th; 100 communities; 70 large communities.
    let mut path: Vec<u32> = (0..300).map(|i| 64_512 + i).collect();
    path[279] = 64501;
    let communities: Vec<(u16, u16)> = (0..100).map(|i| (64500, i)).collect();
    let large: Vec<(u32, u32, u32)> = (0..70).map(|i| (64500, i, i)).collect();
    let attrs = [
        msg::origin(0),
        msg::as_path(&path),
        msg::next_hop([10, 250, 0, 1]),
        msg::communities(&communities),
        msg::large_communities(&large),
    ]
    .concat();
    let m = msg::update(&[], &attrs, &msg::nlri4(&[([8, 8, 8, 0], 24)]));
    let Ok(UpdateOutcome::Routes {
        announced,
        truncated: true,
        ..
    }) = outcome(&m)
    else {
        panic!("{:?}", outcome(&m));
    };
    let a = &announced[0].attrs;
    assert_eq!(a.as_path, path[..255]);
    assert_eq!((a.as_path_len(), a.as_path_omitted), (300, 45));
    assert!(a.local_as_in_path, "our AS past the bound is still seen");
    assert_eq!(a.communities, communities[..64]);
    assert_eq!(a.large_communities, large[..64]);
    // The report says how much of the path it leaves out.
    let json = serde_json::to_value(&announced[0]).unwrap();
    assert_eq!(json["as_path"].as_array().unwrap().len(), 255);
    assert_eq!(json["as_path_omitted"], 45);
    // At the bounds exactly nothing is cut, and our AS is looked for in the list too.
    let attrs = [
        msg::origin(0),
        msg::as_path(&path[25..280]),
        msg::next_hop([10, 250, 0, 1]),
        msg::communities(&communities[..64]),
    ]
    .concat();
    let m = msg::update(&[], &attrs, &msg::nlri4(&[([8, 8, 8, 0], 24)]));
    let Ok(UpdateOutcome::Routes {
        announced,
        truncated: false,
        ..
    }) = outcome(&m)
    else {
        panic!("{:?}", outcome(&m));
    };
    let a = &announced[0].attrs;
    assert_eq!((a.as_path.len(), a.as_path_len()), (255, 255));
    assert!(a.local_as_in_path);
    assert!(serde_json::to_value(&announced[0]).unwrap()["as_path_omitted"].is_null());
}

#[test]
fn a_two_octet_neighbour_s_path_reads_as_the_same_numbers() {
    let m = msg::update(
        &[],
        &[
            msg::origin(0),
            msg::as_path2(&[64500, 3356]),
            msg::next_hop([10, 250, 0, 1]),
        ]
        .concat(),
        &msg::nlri4(&[([8, 8, 8, 0], 24)]),
    );
    let ctx = UpdateContext {
        four_octet_as: false,
        ..ebgp()
    };
    let Ok(UpdateOutcome::Routes { announced, .. }) = outcome_with(&m, ctx) else {
        panic!("2-octet path");
    };
    assert_eq!(announced[0].attrs.as_path, vec![64500, 3356]);
}

#[test]
fn ipv6_routes_come_in_mp_reach_and_go_in_mp_unreach() {
    let a: Ipv6Addr = "2001:db8:100::".parse().unwrap();
    let nh: Ipv6Addr = "fd00:250::1".parse().unwrap();
    let attrs = [
        msg::origin(0),
        msg::as_path(&[64500]),
        msg::mp_reach6(nh, &[(a, 48)]),
    ]
    .concat();
    let Ok(UpdateOutcome::Routes { announced, .. }) = outcome(&msg::update(&[], &attrs, &[]))
    else {
        panic!("MP_REACH");
    };
    assert_eq!(announced[0].prefix, p("2001:db8:100::/48"));
    assert_eq!(announced[0].next_hop, IpAddr::V6(nh));
    let gone = msg::update(&[], &msg::mp_unreach6(&[(a, 48)]), &[]);
    assert_eq!(
        outcome(&gone),
        Ok(UpdateOutcome::Routes {
            withdrawn: vec![p("2001:db8:100::/48")],
            announced: vec![],
            discarded: vec![],
            truncated: false,
        })
    );
    assert_eq!(
        outcome(&msg::eor6()),
        Ok(UpdateOutcome::EndOfRib(Family::Ipv6Unicast))
    );
    assert_eq!(
        outcome(&msg::eor4()),
        Ok(UpdateOutcome::EndOfRib(Family::Ipv4Unicast))
    );
}

/// One UPDATE announcing 198.51.100.0/24 and withdrawing 192.0.2.0/24, with `attrs`.
fn with_attrs(attrs: &[u8]) -> Vec<u8> {
    msg::update(
        &msg::nlri4(&[([192, 0, 2, 0], 24)]),
        attrs,
        &msg::nlri4(&[([198, 51, 100, 0], 24)]),
    )
}

fn expect_withdraw(attrs: &[u8], code: u8, sub: u8) {
    match outcome(&with_attrs(attrs)) {
        Ok(UpdateOutcome::TreatAsWithdraw { withdrawn, error }) => {
            assert_eq!(withdrawn, vec![p("192.0.2.0/24"), p("198.51.100.0/24")]);
            assert_eq!((error.code, error.subcode), (code, sub), "{error}");
        }
        other => panic!("expected treat-as-withdraw {code}/{sub}, got {other:?}"),
    }
}

/// A reset, whether framing (the UPDATE's own lengths) or parsing finds it.
fn expect_reset(m: &[u8], code: u8, sub: u8) {
    let r = match frame(m) {
        Ok(Some(Message::Update(u))) => parse_update(&u, ebgp()),
        Err(n) => Err(n),
        other => panic!("not an UPDATE: {other:?}"),
    };
    match r {
        Err(n) => assert_eq!((n.code, n.subcode), (code, sub), "{n}"),
        other => panic!("expected reset {code}/{sub}, got {other:?}"),
    }
}

fn nh() -> Vec<u8> {
    msg::next_hop([10, 250, 0, 1])
}

#[test]
fn rfc_7606_treat_as_withdraw_cases() {
    let path = msg::as_path(&[64500]);
    // ORIGIN: bad value, bad length (§7.1).
    expect_withdraw(&[msg::origin(3), path.clone(), nh()].concat(), 3, 6);
    expect_withdraw(
        &[msg::attr(0x40, 1, &[0, 0]), path.clone(), nh()].concat(),
        3,
        5,
    );
    // Missing well-known mandatory attributes (§3 d).
    expect_withdraw(&[path.clone(), nh()].concat(), 3, 3);
    expect_withdraw(&[msg::origin(0), path.clone()].concat(), 3, 3);
    // NEXT_HOP: loopback, bad length (§7.3).
    expect_withdraw(
        &[msg::origin(0), path.clone(), msg::next_hop([127, 0, 0, 1])].concat(),
        3,
        8,
    );
    expect_withdraw(
        &[
            msg::origin(0),
            path.clone(),
            msg::attr(0x40, 3, &[10, 0, 0, 1, 0]),
        ]
        .concat(),
        3,
        5,
    );
    // AS_PATH: empty segment, AS_SET (§7.2, RFC 9774).
    expect_withdraw(
        &[msg::origin(0), msg::attr(0x40, 2, &[2, 0]), nh()].concat(),
        3,
        11,
    );
    let as_set = msg::attr(0x40, 2, &[1, 1, 0, 0, 0xfb, 0xf4]);
    expect_withdraw(&[msg::origin(0), as_set, nh()].concat(), 3, 11);
    // MED, COMMUNITIES, LARGE_COMMUNITY lengths (§7.4, §7.8, RFC 8092 §6).
    let base = [msg::origin(0), path.clone(), nh()].concat();
    expect_withdraw(
        &[base.clone(), msg::attr(0x80, 4, &[0, 0, 1])].concat(),
        3,
        5,
    );
    expect_withdraw(
        &[base.clone(), msg::attr(0xc0, 8, &[0, 0, 1])].concat(),
        3,
        5,
    );
    expect_withdraw(
        &[base.clone(), msg::attr(0xc0, 32, &[0; 11])].concat(),
        3,
        5,
    );
    // Flags wrong for a known attribute (§3 c).
    expect_withdraw(
        &[msg::attr(0xc0, 1, &[0]), path.clone(), nh()].concat(),
        3,
        4,
    );
    // An unrecognised well-known attribute: treat-as-withdraw by our decision (module doc).
    expect_withdraw(&[base.clone(), msg::attr(0x40, 99, &[1, 2])].concat(), 3, 2);
    // An attribute overrunning the attribute section (§4): the NLRI is still located.
    let mut overrun = base.clone();
    overrun.extend_from_slice(&[0x80, 4, 10, 0]);
    expect_withdraw(&overrun, 3, 1);
}

#[test]
fn rfc_7606_attribute_discard_and_ignored_cases() {
    let base = [msg::origin(0), msg::as_path(&[64500]), nh()].concat();
    // ATOMIC_AGGREGATE with a length (§7.6): discarded, the routes stand.
    let m = with_attrs(&[base.clone(), msg::attr(0x40, 6, &[1])].concat());
    let Ok(UpdateOutcome::Routes {
        announced,
        discarded,
        ..
    }) = outcome(&m)
    else {
        panic!("{:?}", outcome(&m));
    };
    assert_eq!((announced.len(), discarded), (1, vec![6]));
    // Unknown optional attributes: kept or ignored, never an error (RFC 4271 §5).
    let m = with_attrs(
        &[
            base.clone(),
            msg::attr(0xc0, 200, &[1, 2, 3]),
            msg::attr(0x80, 201, &[1]),
        ]
        .concat(),
    );
    assert!(matches!(outcome(&m), Ok(UpdateOutcome::Routes { .. })));
    // A repeated attribute keeps the first (§3 g).
    let m = with_attrs(&[base.clone(), msg::origin(2)].concat());
    let Ok(UpdateOutcome::Routes { announced, .. }) = outcome(&m) else {
        panic!("duplicate ORIGIN");
    };
    assert_eq!(announced[0].attrs.origin, Origin::Igp);
    // Attributes and no NLRI at all (§5.2): nothing to do, nothing wrong.
    let m = msg::update(&[], &base, &[]);
    assert!(matches!(outcome(&m), Ok(UpdateOutcome::Routes { .. })));
}

#[test]
fn rfc_7606_session_reset_cases() {
    let base = [msg::origin(0), msg::as_path(&[64500]), nh()].concat();
    // NLRI that cannot be parsed (§5.3): prefix length 33, a prefix cut short.
    expect_reset(&msg::update(&[], &base, &[33, 1, 2, 3, 4, 5]), 3, 10);
    expect_reset(&msg::update(&[], &base, &[24, 1, 2]), 3, 10);
    // Withdrawn-routes length or total attribute length overrunning the message.
    let mut m = msg::update(&[], &base, &msg::nlri4(&[([8, 8, 8, 0], 24)]));
    m[19..21].copy_from_slice(&200u16.to_be_bytes());
    expect_reset(&m, 3, 1);
    let mut m = msg::update(&[], &base, &[]);
    m[21..23].copy_from_slice(&200u16.to_be_bytes());
    expect_reset(&m, 3, 1);
    // MP_REACH_NLRI twice, or with a next hop of the wrong length (§3 g, §7.11).
    let nh6: Ipv6Addr = "fd00:250::1".parse().unwrap();
    let pfx = [("2001:db8:100::".parse().unwrap(), 48)];
    let reach = msg::mp_reach6(nh6, &pfx);
    let twice = [base.clone(), reach.clone(), reach].concat();
    expect_reset(&msg::update(&[], &twice, &[]), 3, 1);
    let bad_nh = msg::attr(
        0x80,
        14,
        &[0, 2, 1, 5, 1, 2, 3, 4, 5, 0, 48, 0x20, 1, 0xd, 0xb8, 1, 0],
    );
    let m = msg::update(&[], &[base, bad_nh].concat(), &[]);
    let n = outcome(&m).unwrap_err();
    assert_eq!(n.code, 3, "{n}");
}

#[test]
fn prefixes_parse_print_and_contain() {
    assert_eq!(p("10.1.0.0/16").to_string(), "10.1.0.0/16");
    let err = |s: &str| s.parse::<Prefix>().unwrap_err();
    assert_eq!(
        err("10.1.0.1/16"),
        PrefixError::HostBits {
            text: "10.1.0.1/16".into(),
            network: p("10.1.0.0/16"),
        }
    );
    assert_eq!(
        err("10.1.0.1/16").to_string(),
        "10.1.0.1/16 has host bits set (network is 10.1.0.0/16)"
    );
    assert_eq!(err("10.1.0.0/33"), PrefixError::TooLong(33));
    assert_eq!(err("10.1.0.0"), PrefixError::NoSlash("10.1.0.0".into()));
    assert_eq!(err("10.1.0/8"), PrefixError::BadAddress("10.1.0".into()));
    assert_eq!(err("10.0.0.0/x"), PrefixError::BadLength("x".into()));
    // Deserialising says why too.
    let e = serde_json::from_str::<Prefix>("\"10.0.0.0/33\"").unwrap_err();
    assert!(e.to_string().contains("length 33 is too long"), "{e}");
    assert!(p("10.0.0.0/8").contains(&p("10.1.0.0/16")));
    assert!(!p("10.1.0.0/16").contains(&p("10.0.0.0/8")));
    assert!(!p("::/0").contains(&p("10.0.0.0/8")));
    assert!(p("::/0").contains(&p("2001:db8::/32")));
    assert_eq!(
        serde_json::to_string(&p("2001:db8::/32")).unwrap(),
        "\"2001:db8::/32\""
    );
}
