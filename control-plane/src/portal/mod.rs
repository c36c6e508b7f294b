//! The partner portal: pages the control plane renders on the server. [`chart`] draws the
//! traffic charts as SVG.

pub mod chart;
