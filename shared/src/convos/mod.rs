//! Conversations: an agent's conversation header (the lead and its counters) and its messages.
//!
//! Snapshots and exports are made from these. Every key starts with the organization, so a
//! request can only ever reach its own organization's items.

pub mod model;
pub mod store;

pub use model::{Convo, ConvoInput, Feedback, IngestInput, Message, MessageInput, Sender};
