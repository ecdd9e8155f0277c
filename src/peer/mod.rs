//! A connection as the rest of the relay reaches it: its bounded outbox, its keep-alive
//! byte, and the subscriber records the engine hands messages to. The engine and the
//! keep-alive timer both work through this layer, never through the connection task.

pub mod beat;
pub mod outbox;
pub mod registry;
