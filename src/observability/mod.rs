//! Observability: what the relay tells its operator. The Prometheus series, readiness
//! (`/readyz`), and the log's safety: client text escaped, and budgets for the lines a
//! client can trigger at will.

pub mod log_limit;
pub mod log_text;
pub mod metrics;
pub mod readiness;
pub mod striped;
