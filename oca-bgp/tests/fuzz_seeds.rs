//! Writes the seed corpus of the `bgp_message` fuzz target (fuzz/corpus/bgp_message) from the
//! same hand-built messages the malformed-message tests send. Run it after changing them:
//!
//! ```sh
//! cargo test -p oca-bgp --test fuzz_seeds -- --ignored
//! ```
//! A seed is the target's control byte (bit 0: the router's OPEN and KEEPALIVE first; bits 2-7:
//! chunk size) and the router's byte stream.

mod common;

use std::path::PathBuf;

use common::msg;

const NH: [u8; 4] = [192, 0, 2, 1];

fn seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let base = msg::basic_attrs(&[64500], NH);
    let v6: std::net::Ipv6Addr = "2001:db8:100::".parse().unwrap();
    let full = [
        msg::origin(1),
        msg::as_path(&[64500, 64510]),
        msg::next_hop(NH),
        msg::med(50),
        msg::local_pref(200),
        msg::communities(&[(64500, 100)]),
        msg::large_communities(&[(64500, 1, 2)]),
    ]
    .concat();
    let nlri = msg::nlri4(&[([198, 51, 100, 0], 24), ([8, 8, 8, 0], 24)]);
    let mut bad_marker = msg::keepalive();
    bad_marker[0] = 0;
    vec![
        (
            "open_gr",
            0x04,
            msg::router_open(
                64500,
                90,
                [10, 0, 0, 1],
                Some(msg::gr_both(120, true, true)),
            ),
        ),
        (
            "update_full",
            0x41,
            msg::update(&msg::nlri4(&[([192, 0, 2, 0], 24)]), &full, &nlri),
        ),
        (
            "update_v6",
            0x05,
            msg::update(
                &[],
                &[
                    base[..base.len() - 7].to_vec(),
                    msg::mp_reach6("fd00::1".parse().unwrap(), &[(v6, 48)]),
                ]
                .concat(),
                &[],
            ),
        ),
        (
            "withdraw_v6",
            0x09,
            msg::update(&[], &msg::mp_unreach6(&[(v6, 48)]), &[]),
        ),
        ("eor", 0x81, [msg::eor4(), msg::eor6()].concat()),
        ("bad_marker", 0x01, bad_marker),
        (
            "bad_origin",
            0x11,
            msg::update(
                &[],
                &[msg::origin(5), msg::as_path(&[64500]), msg::next_hop(NH)].concat(),
                &nlri,
            ),
        ),
        (
            "unknown_well_known",
            0x21,
            msg::update(
                &[],
                &[base.clone(), msg::attr(0x40, 99, &[1])].concat(),
                &nlri,
            ),
        ),
        (
            "attr_overrun",
            0x01,
            msg::update(&[], &[base.clone(), vec![0x80, 4, 200, 0]].concat(), &nlri),
        ),
        (
            "nlri_33",
            0x01,
            msg::update(&[], &base, &[33, 1, 2, 3, 4, 5]),
        ),
        (
            "as_set",
            0x01,
            msg::update(
                &[],
                &[
                    msg::origin(0),
                    msg::attr(0x40, 2, &[1, 1, 0, 0, 0xfb, 0xf4]),
                    msg::next_hop(NH),
                ]
                .concat(),
                &nlri,
            ),
        ),
        ("route_refresh", 0x01, msg::message(5, &[0, 1, 0, 1])),
        (
            "notification",
            0x01,
            msg::notification(6, 2, &[4, b'b', b'y', b'e', b'!']),
        ),
        (
            "many_routes",
            0xfd,
            (0..60u8)
                .flat_map(|i| msg::announce4(&[64500], NH, &[([20, i, 0, 0], 16)]))
                .collect(),
        ),
    ]
}

#[test]
#[ignore = "writes the fuzz corpus; run by hand"]
fn write_fuzz_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/bgp_message");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, control, stream) in seeds() {
        let mut bytes = vec![control];
        bytes.extend_from_slice(&stream);
        std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
    }
}

#[test]
fn the_seeds_are_whole_messages() {
    for (name, _, stream) in seeds() {
        assert!(stream.len() >= 19, "{name}");
        if name != "bad_marker" {
            assert_eq!(&stream[..16], &[0xff; 16][..], "{name}");
        }
    }
}
