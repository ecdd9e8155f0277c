//! Delivery: where keys, streams, pending messages and presence live (the engines behind
//! one trait), and publishing one message the way every door does it.

pub mod engine;
pub mod publish;
