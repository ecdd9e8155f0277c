//! Policy: who may do what, and how often. Access control (registration and publisher
//! tokens, allowed origins) and rate limits (per client IP, per connection). Pure rules
//! over settings and request headers; they know nothing of connections or keys.

pub mod auth;
pub mod limits;
