//! Services: the operations that change the control plane on someone's behalf, shared by the
//! admin API and the portal. Each takes the [`crate::app::App`], the actor (`admin-token` for
//! the admin bearer token, `user:<login>` for a portal user) and the time, checks the request
//! with the domain's rules, writes storage (with an audit entry saying who, when and why) and
//! keeps the in-memory views current. Handlers only translate HTTP to and from these.

pub mod maintenance;
