//! Training snapshots (Tether contract): frozen copies of chosen messages of a contact's
//! conversations, with curation metadata (quality, category, tags, notes, archive state).

pub mod create;
pub mod model;
pub mod store;

pub use model::{CreateInput, PatchInput, Snapshot, SnapshotMessage};
