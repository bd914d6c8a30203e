//! The HTTP handlers of every route: each parses its request, calls the domain code, and
//! answers in its route's envelope (see [`crate::routes`]). Nothing below this layer knows
//! about requests or responses except through [`crate::http`].

pub mod convos;
pub mod export_jobs;
pub mod exports;
pub mod job_view;
pub mod query;
pub mod snapshots;
