//! The domain: what the control plane knows and decides, above storage and below the fleet
//! model. Each module takes borrowed inputs (storage, views, `now`) and returns its own or
//! storage's errors; none knows about HTTP.

pub mod accounts;
pub mod catalog;
pub mod credentials;
pub mod history;
pub mod intake;
pub mod issues;
pub mod live;
pub mod login_limits;
pub mod maintenance;
pub mod player_tokens;
pub mod popularity;
pub mod routes;
pub mod streams;
pub mod url_keys;
