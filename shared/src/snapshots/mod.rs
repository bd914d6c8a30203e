//! Training snapshots (Tether contract): frozen copies of chosen messages of a contact's
//! conversations, with curation metadata (quality, category, tags, notes, archive state).

mod chunks;
pub mod create;
pub mod model;
pub mod store;
mod store_filters;
mod store_list;
mod store_read;
mod store_write;

pub use model::{CreateInput, PatchInput, Snapshot, SnapshotMessage};
