//! The fleet's shape: a pure function of the flags, so a second run against the same database
//! finds what the first one built, and nothing about it has to be stored or looked up.
//!
//! Sites are numbered; every fifth is an IXP site and the four after it are ISP sites filling
//! from it (their parent), as `bench/cp_fleet.py` builds them; a site's region is its IXP's
//! number modulo the region count. Site `s` owns client prefixes `s·P .. (s+1)·P` (P per site),
//! prefix `n` being the /24 at `11.0.0.0 + n·256`, and is allowed exactly those; its appliances
//! report them. Content file `i` is rendition `i % 4` of title `i / 4`; titles are ranked by
//! popularity in index order (title 0 the most played).

use std::net::{IpAddr, Ipv4Addr};

use oca_protocol::admin::SiteKind;
use oca_protocol::prefix::Prefix;

/// Resolutions of a title's four renditions, best first (the order files are numbered in).
pub const RESOLUTIONS: [u32; 4] = [2160, 1080, 720, 480];

/// First address of prefix 0 (11.0.0.0): clear of private and loopback space up to prefix
/// 13·2^20.
const BASE: u32 = 11 << 24;

/// Most client prefixes the numbering can express before it leaves unicast space.
pub const MAX_PREFIXES: u32 = (213 << 16) - 1;

/// How big the fleet is; everything else follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Sites (a fifth of them IXP sites).
    pub sites: u32,
    /// Appliances in each site.
    pub per_site: u32,
    /// Regions.
    pub regions: u32,
    /// Client prefixes (/24) each site owns and is allowed.
    pub prefixes_per_site: u32,
    /// Content files (4 per title).
    pub files: u32,
    /// Files an appliance holds (about; its share of the popular head plus its own tail).
    pub files_per_appliance: u32,
    /// Subscribers with player tokens (no stream limit to speak of).
    pub subscribers: u32,
}

/// An appliance: site and its number within the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oca {
    /// Its site.
    pub site: u32,
    /// Its number in the site.
    pub k: u32,
}

impl Shape {
    /// Checks the numbers fit together.
    pub fn check(&self) -> Result<(), String> {
        if self.sites == 0 || self.per_site == 0 || self.regions == 0 {
            return Err("sites, appliances and regions must be positive".into());
        }
        if self.prefixes_per_site == 0 {
            return Err("each site needs at least one prefix".into());
        }
        if u64::from(self.sites) * u64::from(self.prefixes_per_site) > u64::from(MAX_PREFIXES) {
            return Err(format!("at most {MAX_PREFIXES} prefixes in all"));
        }
        if self.files < 4 || !self.files.is_multiple_of(4) {
            return Err("content files: a positive multiple of 4 (4 renditions a title)".into());
        }
        if self.files_per_appliance == 0 || self.subscribers == 0 {
            return Err("files per appliance and subscribers must be positive".into());
        }
        Ok(())
    }

    /// Appliances in all.
    pub fn appliances(&self) -> u32 {
        self.sites * self.per_site
    }

    /// Titles in all.
    pub fn titles(&self) -> u32 {
        self.files / 4
    }

    /// Client prefixes in all.
    pub fn prefixes(&self) -> u32 {
        self.sites * self.prefixes_per_site
    }

    /// Appliance number `a` (0..appliances).
    pub fn oca(&self, a: u32) -> Oca {
        Oca {
            site: a / self.per_site,
            k: a % self.per_site,
        }
    }

    /// The number of appliance `o`.
    pub fn index(&self, o: Oca) -> u32 {
        o.site * self.per_site + o.k
    }

    /// The appliances of site `s`.
    pub fn site_appliances(&self, s: u32) -> std::ops::Range<u32> {
        s * self.per_site..(s + 1) * self.per_site
    }

    /// The site owning prefix `n`.
    pub fn prefix_site(&self, n: u32) -> u32 {
        n / self.prefixes_per_site
    }

    /// The prefixes site `s` owns.
    pub fn site_prefixes(&self, s: u32) -> std::ops::Range<u32> {
        s * self.prefixes_per_site..(s + 1) * self.prefixes_per_site
    }

    /// The files every site keeps, one copy in the site (title popularity order): half of the
    /// site's room, so plays of popular titles are served close by.
    pub fn head_files(&self) -> u32 {
        (self.per_site * self.files_per_appliance / 2).min(self.files)
    }

    /// The appliances of the IXP sites of each region.
    pub fn region_ixps(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.regions as usize];
        for s in (0..self.sites).filter(|s| kind(*s) == SiteKind::Ixp) {
            out[region(self, s) as usize].push(s);
        }
        out
    }
}

/// The kind of site `s`.
pub fn kind(s: u32) -> SiteKind {
    if s.is_multiple_of(5) {
        SiteKind::Ixp
    } else {
        SiteKind::Isp
    }
}

/// The tier site of ISP site `s` (the IXP before it); none for an IXP site.
pub fn parent(s: u32) -> Option<u32> {
    (kind(s) == SiteKind::Isp).then_some(s - s % 5)
}

/// Region number of site `s` (its IXP's).
pub fn region(shape: &Shape, s: u32) -> u32 {
    (s - s % 5) % shape.regions
}

/// Site id of site `s`.
pub fn site_id(s: u32) -> String {
    match kind(s) {
        SiteKind::Ixp => format!("ixp{s}"),
        SiteKind::Isp => format!("isp{s}"),
    }
}

/// Region name of region `r`.
pub fn region_name(r: u32) -> String {
    format!("r{r}")
}

/// Appliance id of `o`.
pub fn oca_id(o: Oca) -> String {
    format!("oca{}-{}", o.site, o.k)
}

/// Host part of the appliance's (fictitious) URL; `.invalid` never resolves (RFC 2606).
pub fn oca_url(o: Oca) -> String {
    format!("http://oca{}-{}.invalid", o.site, o.k)
}

/// Reads an appliance back from the host of a URL built by [`oca_url`].
pub fn parse_oca_host(host: &str) -> Option<Oca> {
    let rest = host.strip_prefix("oca")?.strip_suffix(".invalid")?;
    let (s, k) = rest.split_once('-')?;
    Some(Oca {
        site: s.parse().ok()?,
        k: k.parse().ok()?,
    })
}

/// Prefix `n` as a /24.
pub fn prefix(n: u32) -> Prefix {
    Prefix::new(IpAddr::V4(Ipv4Addr::from(BASE + (n << 8))), 24)
        .expect("a /24 with host bits clear")
}

/// Host `host` (1..=254) inside prefix `n`.
pub fn client_addr(n: u32, host: u8) -> Ipv4Addr {
    Ipv4Addr::from(BASE + (n << 8) + u32::from(host))
}

/// Title id of title `t`.
pub fn title_id(t: u32) -> String {
    format!("t{t}")
}

/// Content id of file `i`.
pub fn content_id(i: u32) -> String {
    format!("t{}_{}p.mp4", i / 4, RESOLUTIONS[(i % 4) as usize])
}

/// Reads a file number back from a content id built by [`content_id`].
pub fn parse_content_id(id: &str) -> Option<u32> {
    let rest = id.strip_prefix('t')?.strip_suffix("p.mp4")?;
    let (t, res) = rest.split_once('_')?;
    let t: u32 = t.parse().ok()?;
    let r = RESOLUTIONS.iter().position(|&x| x.to_string() == res)?;
    Some(t.checked_mul(4)? + r as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            sites: 4000,
            per_site: 5,
            regions: 20,
            prefixes_per_site: 250,
            files: 200_000,
            files_per_appliance: 200,
            subscribers: 1000,
        }
    }

    #[test]
    fn names_read_back() {
        let s = shape();
        assert!(s.check().is_ok());
        for i in [0, 1, 7, 199_999] {
            assert_eq!(parse_content_id(&content_id(i)), Some(i));
        }
        assert_eq!(parse_content_id("t1_1081p.mp4"), None);
        let o = s.oca(19_999);
        assert_eq!((o.site, o.k), (3999, 4));
        let url = oca_url(o);
        assert_eq!(
            parse_oca_host(url.strip_prefix("http://").unwrap()),
            Some(o)
        );
        assert_eq!(s.index(o), 19_999);
    }

    #[test]
    fn a_million_prefixes_stay_in_unicast_space() {
        let s = shape();
        assert_eq!(s.prefixes(), 1_000_000);
        assert_eq!(prefix(0).to_string(), "11.0.0.0/24");
        assert_eq!(prefix(999_999).to_string(), "26.66.63.0/24");
        assert_eq!(s.prefix_site(999_999), 3999);
        assert!(prefix(MAX_PREFIXES).to_string().starts_with("223."));
    }

    #[test]
    fn isps_fill_from_the_ixp_before_them_in_its_region() {
        let s = shape();
        assert_eq!((kind(10), parent(10)), (SiteKind::Ixp, None));
        assert_eq!((kind(13), parent(13)), (SiteKind::Isp, Some(10)));
        assert_eq!(region(&s, 13), region(&s, 10));
        let r = s.region_ixps();
        assert_eq!(r.iter().map(Vec::len).sum::<usize>(), 800);
        assert!(r[region(&s, 13) as usize].contains(&10));
    }
}
