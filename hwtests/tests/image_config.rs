//! The appliance image's configuration generation, without a VM: `oca-bgp-toml` (which
//! `oca-setup` runs at boot) turns oca.conf's BGP keys into the fill agent's `[bgp]` table, and
//! the fill agent's `--check-config` takes the whole file as `oca-setup` writes it. Shapes that
//! are wrong are refused by the script with the key's name; values that are well shaped but
//! wrong (a neighbour twice) by the fill agent's check, which `oca-setup` also runs. The whole
//! path at boot is `image_boot.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/rootfs/usr/lib/oca/oca-bgp-toml")
}

/// Runs the script with `keys` (oca.conf's names) in a clean environment: (ok, stdout, stderr).
fn bgp_toml(keys: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in keys {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fill agent's config as `oca-setup` writes it, the `[bgp]` table last; `--check-config`'s
/// (ok, stdout, stderr).
fn check(fill_agent: &Path, dir: &Path, table: &str) -> (bool, String, String) {
    std::fs::write(dir.join("credential"), "c\n").unwrap();
    let file = dir.join("fill-agent.toml");
    std::fs::write(
        &file,
        format!(
            "# Written by oca-setup at boot\ncontrol_plane = \"https://cp.example.net:7443\"\n\
             oca_id = \"oca-1\"\ncredential_file = \"{d}/credential\"\nsite = \"isp\"\n\
             stores = [\"/srv/oca/disk0\"]\nkeys = \"/var/lib/oca/url-keys.json\"\n\
             daemon_admin = \"127.0.0.1:9180\"\nprefixes = []\n\n{table}",
            d = dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(fill_agent)
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &[(&str, &str)] = &[
    ("OCA_BGP_LOCAL_AS", "64501"),
    ("OCA_BGP_ROUTER_ID", "192.0.2.10"),
    // Comma or space separated; an IPv6 address with or without brackets; 4-octet AS.
    (
        "OCA_BGP_NEIGHBORS",
        "192.0.2.1:64500,2001:db8::1:64500 [2001:db8::2]:4200000000",
    ),
    ("OCA_BGP_MD5_PASSWORD", "shared secret#1"),
];

#[test]
fn oca_conf_bgp_keys_become_the_bgp_table_the_agent_takes() {
    let bins = test_support::cargo_bins(false, &[("fill-agent", "fill-agent")]);
    let agent = &bins["fill-agent"];
    let dir = tempfile::tempdir().unwrap();

    // No key: no table, the agent runs without BGP.
    let (ok, out, err) = bgp_toml(&[]);
    assert!(ok && out.is_empty() && err.is_empty(), "{out}{err}");
    let (ok, out, err) = check(agent, dir.path(), &out);
    assert!(ok && out.contains("no BGP"), "{out}{err}");

    let (ok, table, err) = bgp_toml(GOOD);
    assert!(ok, "{err}");
    let v: toml::Value = toml::from_str(&table).unwrap();
    let bgp = &v["bgp"];
    assert_eq!(bgp["local_as"].as_integer(), Some(64501));
    assert_eq!(bgp["router_id"].as_str(), Some("192.0.2.10"));
    assert_eq!(
        bgp["listen_addresses"].as_array().map(Vec::len),
        Some(0),
        "the unit cannot bind port 179: dial out only"
    );
    let n = bgp["neighbors"].as_array().unwrap();
    let got: Vec<(&str, i64, &str)> = n
        .iter()
        .map(|n| {
            (
                n["address"].as_str().unwrap(),
                n["peer_as"].as_integer().unwrap(),
                n["md5_password"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("192.0.2.1", 64500, "shared secret#1"),
            ("2001:db8::1", 64500, "shared secret#1"),
            ("2001:db8::2", 4_200_000_000, "shared secret#1"),
        ]
    );
    let (ok, out, err) = check(agent, dir.path(), &table);
    assert!(ok, "{err}");
    assert!(
        out.contains("BGP as AS64501 (router id 192.0.2.10, dialling out only) with 3 neighbour(s): 192.0.2.1 AS64500, 2001:db8::1 AS64500, 2001:db8::2 AS4200000000"),
        "{out}"
    );
    // Without a password, none is written.
    let (ok, table, _) = bgp_toml(&GOOD[..3]);
    assert!(ok && !table.contains("md5_password"), "{table}");
}

/// The example oca.conf's keys, commented-out ones switched on, quotes around a value dropped
/// as oca-setup drops them.
fn example_keys() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/oca.conf.example"),
    )
    .unwrap();
    text.lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter(|l| l.starts_with("OCA_"))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn the_example_oca_conf_gives_a_table_the_agent_takes() {
    let keys = example_keys();
    let bgp: Vec<(&str, &str)> = keys
        .iter()
        .filter(|(k, _)| k.starts_with("OCA_BGP_"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(bgp.len(), 4, "every BGP key is in the example: {bgp:?}");
    let (ok, table, err) = bgp_toml(&bgp);
    assert!(ok, "{err}");
    let bins = test_support::cargo_bins(false, &[("fill-agent", "fill-agent")]);
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = check(&bins["fill-agent"], dir.path(), &table);
    assert!(ok, "{err}");
    assert!(
        out.contains("with 2 neighbour(s): 192.0.2.1 AS64500, 2001:db8::1 AS64500"),
        "{out}"
    );
    // Every key the example names is one oca-setup knows.
    let setup = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/rootfs/usr/lib/oca/oca-setup"),
    )
    .unwrap();
    for (k, _) in &keys {
        let name = k.trim_start_matches("OCA_").to_lowercase();
        assert!(setup.contains(&format!("[{name}]=")), "oca-setup lacks {k}");
    }
}

#[test]
fn wrong_shapes_are_refused_naming_the_key_and_wrong_values_by_the_agent() {
    let with = |key: &str, value: &str| -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = GOOD
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !value.is_empty() {
            keys.push((key.to_string(), value.to_string()));
        }
        keys
    };
    for (key, value, why) in [
        ("OCA_BGP_LOCAL_AS", "", "OCA_BGP_LOCAL_AS is missing"),
        (
            "OCA_BGP_LOCAL_AS",
            "AS64501",
            "OCA_BGP_LOCAL_AS: 'AS64501' is not an AS number",
        ),
        ("OCA_BGP_LOCAL_AS", "4294967296", "is not an AS number"),
        ("OCA_BGP_ROUTER_ID", "", "OCA_BGP_ROUTER_ID is missing"),
        (
            "OCA_BGP_ROUTER_ID",
            "2001:db8::10",
            "is not an IPv4 address",
        ),
        ("OCA_BGP_NEIGHBORS", "", "OCA_BGP_NEIGHBORS is missing"),
        (
            "OCA_BGP_NEIGHBORS",
            "192.0.2.1",
            "'192.0.2.1' is not ADDRESS:AS",
        ),
        (
            "OCA_BGP_NEIGHBORS",
            "2001:db8::1",
            "'2001:db8::1' has no AS",
        ),
        ("OCA_BGP_NEIGHBORS", "192.0.2.1:0", "is not an AS number"),
        (
            "OCA_BGP_NEIGHBORS",
            "router\"1:64500",
            "is not an IPv4 or IPv6 address",
        ),
        (
            "OCA_BGP_MD5_PASSWORD",
            "a\"b",
            "without quotes or backslashes",
        ),
        (
            "OCA_BGP_MD5_PASSWORD",
            &"x".repeat(81),
            "at most 80 characters",
        ),
    ] {
        let keys = with(key, value);
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (ok, out, err) = bgp_toml(&keys);
        assert!(!ok && out.is_empty(), "{key}={value:?} accepted:\n{out}");
        assert!(err.contains(why), "{key}={value:?}: {why:?} not in {err}");
    }

    // Well shaped, still wrong: the agent's own check says why.
    let bins = test_support::cargo_bins(false, &[("fill-agent", "fill-agent")]);
    let dir = tempfile::tempdir().unwrap();
    for (neighbors, why) in [
        (
            "192.0.2.1:64500 192.0.2.1:64500",
            "neighbor 192.0.2.1 is listed twice",
        ),
        ("192.0.2.300:64500", "invalid IP address syntax"),
        ("fe80::1:64500", "link-local neighbours are not supported"),
    ] {
        let keys = with("OCA_BGP_NEIGHBORS", neighbors);
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (ok, table, err) = bgp_toml(&keys);
        assert!(ok, "{err}");
        let (ok, _, err) = check(&bins["fill-agent"], dir.path(), &table);
        assert!(
            !ok && err.contains(why),
            "{neighbors}: {why:?} not in {err}"
        );
    }
}
