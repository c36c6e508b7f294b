//! An UPDATE read under RFC 7606 revised error handling, into what it asks of the Adj-RIB-In.
//!
//! [`parse_update`] takes an [`Update`] that `framing.rs` framed and applies the codec's
//! `parse_revised`, which says for each bad attribute whether to reset the session, withdraw the
//! UPDATE's routes or drop the attribute, then the codec's semantic checks (mandatory
//! attributes, next hops, AS path), and turns what is left into [`Route`]s. With several errors
//! the strongest disposition wins (RFC 7606 §3 h). Its answer is an [`UpdateOutcome`]:
//!
//! - the End-of-RIB marker of a family (RFC 4724 §2: an empty UPDATE for IPv4 unicast, an
//!   UPDATE whose only attribute is an empty MP_UNREACH_NLRI for any other family);
//! - routes to withdraw and to install, with the attributes dropped under attribute-discard;
//! - treat-as-withdraw: every prefix the UPDATE names is withdrawn, and the session stays;
//!
//! or the NOTIFICATION that resets the session when RFC 7606 says nothing less will do (the NLRI
//! can no longer be located).
//!
//! An unrecognised well-known attribute (Optional bit clear, type unknown) is treat-as-withdraw
//! here, not the session reset of RFC 4271 §6.3: RFC 7606 keeps resets for errors that make the
//! NLRI unlocatable, and this one leaves the NLRI intact, so one bad UPDATE withdraws its own
//! routes instead of all of the session's (docs/bgp.md). NEXT_HOP is required with body NLRI
//! from internal neighbours too (the codec only insists on it for external ones). Only IPv4 and
//! IPv6 unicast prefixes are collected; a route of a family the session did not negotiate is the
//! session's to ignore.
//!
//! # Attributes: shared and bounded
//!
//! The routes of one UPDATE share one [`PathAttributes`] behind an `Arc`: a 4 KiB UPDATE with
//! 3 KB of communities and 500 short prefixes holds those communities once, not 500 times. The
//! lists are cut to their bounds (255 ASNs, 64 communities, 64 large communities, the first
//! ones as sent) and the outcome says so (`truncated`); the route itself stays. Such an UPDATE is
//! well formed, so RFC 7606 has nothing to say about it, and the lists are only shown to
//! operators: what steering needs of them is the AS path's length, kept whole
//! ([`PathAttributes::as_path_len`]), and the loop check's answer, worked out on the whole path
//! ([`PathAttributes::local_as_in_path`]). docs/bgp.md ("Bounds") has the reasoning.

use std::net::IpAddr;
use std::sync::Arc;

use rustbgpd_wire as w;
use rustbgpd_wire::attribute::{AsPathSegment, PathAttribute};
use rustbgpd_wire::validate::{ErrorDisposition, UpdateValidationOptions};

use super::framing::Update;
use super::notification::{code, from_decode_error, Notification};
use super::types::{Family, Origin, PathAttributes, Prefix, Route};

/// How an UPDATE is read on this session.
#[derive(Clone, Copy, Debug)]
pub struct UpdateContext {
    /// Whether both sides announced 4-octet AS (AS_PATH entries are then 4 bytes).
    pub four_octet_as: bool,
    /// Whether the neighbour is in our AS (RFC 7606 treats some attributes differently then).
    pub ibgp: bool,
    /// Our AS, looked for in the whole AS path before it is cut to its bound
    /// ([`PathAttributes::local_as_in_path`]).
    pub local_as: u32,
}

/// What one UPDATE asks of the Adj-RIB-In.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    EndOfRib(Family),
    /// Routes to withdraw, then routes to install.
    Routes {
        /// Withdrawn prefixes (body and MP_UNREACH_NLRI).
        withdrawn: Vec<Prefix>,
        /// Announced routes (body NLRI and MP_REACH_NLRI).
        announced: Vec<Route>,
        /// Type codes of attributes dropped under RFC 7606 attribute-discard.
        discarded: Vec<u8>,
        /// Whether the announced routes' attributes were cut to their bounds (a list longer
        /// than [`PathAttributes`] keeps).
        truncated: bool,
    },
    /// RFC 7606 treat-as-withdraw: every prefix the UPDATE names is withdrawn, the session stays.
    TreatAsWithdraw {
        /// Every prefix in the UPDATE, announced or withdrawn.
        withdrawn: Vec<Prefix>,
        /// The error a session reset would have sent, for the log.
        error: Notification,
    },
}

/// Reads a framed UPDATE under RFC 7606; an error is the NOTIFICATION that resets the session.
pub fn parse_update(u: &Update, ctx: UpdateContext) -> Result<UpdateOutcome, Notification> {
    let raw = &u.0;
    if raw.withdrawn_routes.is_empty() && raw.path_attributes.is_empty() && raw.nlri.is_empty() {
        return Ok(UpdateOutcome::EndOfRib(Family::Ipv4Unicast));
    }
    let parsed = raw
        .parse_revised(ctx.four_octet_as, ctx.ibgp, false, &[])
        .map_err(|e| from_decode_error(&e))?;
    let update = &parsed.update;
    if parsed.malformed.is_empty() {
        if let Some(f) = end_of_rib(update) {
            return Ok(UpdateOutcome::EndOfRib(f));
        }
    }
    let nlri = Nlri::collect(update);
    let mut worst = Worst::default();
    let mut discarded = Vec::new();
    for m in &parsed.malformed {
        if m.disposition == ErrorDisposition::AttributeDiscard {
            discarded.push(m.type_code);
        }
        worst.note(m.disposition, from_decode_error(&m.error));
    }
    let has_body = !update.announced.is_empty();
    if let Err(v) = w::validate::validate_update_attributes_with_context(
        &update.attributes,
        has_body || nlri.mp_reach,
        has_body,
        !ctx.ibgp,
        UpdateValidationOptions::default(),
    ) {
        let n = Notification::new(code::UPDATE, v.error.subcode, v.error.data);
        worst.note(v.error.disposition, n);
    }
    // The codec only insists on NEXT_HOP for external neighbours; a route without one is
    // unusable from any neighbour (RFC 4271 §5.1.3 makes it mandatory for body NLRI).
    if has_body && nlri.body_next_hop.is_none() {
        worst.note(
            ErrorDisposition::TreatAsWithdraw,
            Notification::new(code::UPDATE, 3, vec![3]),
        );
    }
    match worst.0 {
        Some((ErrorDisposition::SessionReset, n)) => Err(n),
        Some((ErrorDisposition::TreatAsWithdraw, error)) => {
            let mut withdrawn = nlri.withdrawn;
            withdrawn.extend(nlri.announced.iter().map(|(p, _)| *p));
            Ok(UpdateOutcome::TreatAsWithdraw { withdrawn, error })
        }
        _ => {
            let (announced, truncated) = build_routes(&update.attributes, &nlri, ctx);
            Ok(UpdateOutcome::Routes {
                truncated: truncated && !announced.is_empty(),
                announced,
                withdrawn: nlri.withdrawn,
                discarded,
            })
        }
    }
}

/// The strongest RFC 7606 disposition met so far (§3 h), with the error that caused it.
#[derive(Default)]
struct Worst(Option<(ErrorDisposition, Notification)>);

impl Worst {
    fn note(&mut self, d: ErrorDisposition, n: Notification) {
        if self.0.as_ref().is_none_or(|(had, _)| d > *had) {
            self.0 = Some((d, n));
        }
    }
}

/// The unicast prefixes an UPDATE names, each announced one with its next hop.
struct Nlri {
    withdrawn: Vec<Prefix>,
    announced: Vec<(Prefix, Option<IpAddr>)>,
    body_next_hop: Option<IpAddr>,
    mp_reach: bool,
}

impl Nlri {
    fn collect(update: &w::update::ParsedUpdate) -> Nlri {
        let body_next_hop = update.attributes.iter().find_map(|a| match a {
            PathAttribute::NextHop(nh) => Some(IpAddr::V4(*nh)),
            _ => None,
        });
        let mut n = Nlri {
            withdrawn: update
                .withdrawn
                .iter()
                .filter_map(|e| Prefix::new(IpAddr::V4(e.prefix.addr), e.prefix.len))
                .collect(),
            announced: update
                .announced
                .iter()
                .filter_map(|e| Prefix::new(IpAddr::V4(e.prefix.addr), e.prefix.len))
                .map(|p| (p, body_next_hop))
                .collect(),
            body_next_hop,
            mp_reach: false,
        };
        for a in &update.attributes {
            match a {
                PathAttribute::MpReachNlri(mp) => {
                    n.mp_reach = true;
                    if Family::from_codec(mp.afi, mp.safi).is_some() {
                        n.announced.extend(
                            mp.announced
                                .iter()
                                .filter_map(|e| Prefix::from_codec(e.prefix))
                                .map(|p| (p, Some(mp.next_hop))),
                        );
                    }
                }
                PathAttribute::MpUnreachNlri(mp)
                    if Family::from_codec(mp.afi, mp.safi).is_some() =>
                {
                    n.withdrawn.extend(
                        mp.withdrawn
                            .iter()
                            .filter_map(|e| Prefix::from_codec(e.prefix)),
                    );
                }
                _ => {}
            }
        }
        n
    }
}

/// RFC 4724 §2: the End-of-RIB of a family other than IPv4 unicast is an UPDATE whose only
/// attribute is an empty MP_UNREACH_NLRI.
fn end_of_rib(update: &w::update::ParsedUpdate) -> Option<Family> {
    if !update.withdrawn.is_empty() || !update.announced.is_empty() {
        return None;
    }
    match update.attributes.as_slice() {
        [PathAttribute::MpUnreachNlri(mp)] if mp.withdrawn.is_empty() => {
            Family::from_codec(mp.afi, mp.safi)
        }
        _ => None,
    }
}

/// The UPDATE's routes, all sharing one allocation of its attributes; whether the attributes
/// were cut to their bounds.
fn build_routes(attrs: &[PathAttribute], nlri: &Nlri, ctx: UpdateContext) -> (Vec<Route>, bool) {
    let (shared, truncated) = route_attributes(attrs, ctx);
    let shared = Arc::new(shared);
    let routes = nlri
        .announced
        .iter()
        .filter_map(|(prefix, nh)| {
            Some(Route {
                prefix: *prefix,
                next_hop: (*nh)?,
                attrs: Arc::clone(&shared),
            })
        })
        .collect();
    (routes, truncated)
}

/// The attributes shared by every route of one UPDATE, cut to their bounds; whether any was
/// cut.
fn route_attributes(attrs: &[PathAttribute], ctx: UpdateContext) -> (PathAttributes, bool) {
    let mut r = PathAttributes::default();
    let mut truncated = false;
    for a in attrs {
        match a {
            PathAttribute::Origin(o) => {
                r.origin = match o {
                    w::attribute::Origin::Igp => Origin::Igp,
                    w::attribute::Origin::Egp => Origin::Egp,
                    w::attribute::Origin::Incomplete => Origin::Incomplete,
                }
            }
            PathAttribute::AsPath(p) => {
                let mut all = p.segments.iter().flat_map(|s| match s {
                    AsPathSegment::AsSequence(v) | AsPathSegment::AsSet(v) => v.iter().copied(),
                });
                r.as_path = all.by_ref().take(PathAttributes::MAX_AS_PATH).collect();
                r.local_as_in_path = r.as_path.contains(&ctx.local_as);
                // The rest is only counted (steering ranks by the length) and searched for our
                // own AS (the import filter's loop check), never stored.
                for asn in all {
                    r.as_path_omitted = r.as_path_omitted.saturating_add(1);
                    r.local_as_in_path |= asn == ctx.local_as;
                }
                truncated |= r.as_path_omitted > 0;
            }
            PathAttribute::Med(m) => r.med = Some(*m),
            PathAttribute::LocalPref(l) if ctx.ibgp => r.local_pref = Some(*l),
            PathAttribute::Communities(c) | PathAttribute::CommunitiesPartial(c) => {
                truncated |= c.len() > PathAttributes::MAX_COMMUNITIES;
                r.communities = c
                    .iter()
                    .take(PathAttributes::MAX_COMMUNITIES)
                    .map(|v| ((v >> 16) as u16, *v as u16))
                    .collect();
            }
            PathAttribute::LargeCommunities(c) | PathAttribute::LargeCommunitiesPartial(c) => {
                truncated |= c.len() > PathAttributes::MAX_LARGE_COMMUNITIES;
                r.large_communities = c
                    .iter()
                    .take(PathAttributes::MAX_LARGE_COMMUNITIES)
                    .map(|l| (l.global_admin, l.local_data1, l.local_data2))
                    .collect();
            }
            _ => {}
        }
    }
    (r, truncated)
}
