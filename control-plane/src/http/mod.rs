//! The HTTP API, by audience: [`admin`] (the admin bearer token), [`appliance`] (each
//! appliance's credential), [`play`] (a subscriber's player token), [`origin`] (signed fill
//! URLs); [`request`] reads what they share (bodies, credentials), [`error`] turns every
//! domain error into a status and JSON body, [`maintenance`] is the admin token's maintenance and
//! audit endpoints, [`probes`] answers the load balancer's `/healthz` and `/readyz`, [`latency`]
//! times every request by route, [`router`] maps paths to handlers (the API's, and the admin
//! listener's `/metrics` and probes). The listener that runs each is [`crate::server`].

pub mod accounts;
pub mod admin;
pub mod appliance;
pub mod error;
pub mod history;
pub mod latency;
pub mod live;
pub mod maintenance;
pub mod origin;
pub mod play;
pub mod probes;
pub mod request;
pub mod router;
