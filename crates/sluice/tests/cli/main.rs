//! The command line against a real `sluice serve` (real PostgreSQL, real
//! NATS JetStream), each test with its own database, namespace and server
//! process, and the CLI run as the separate process a user runs.

mod connectors;
mod infer;
mod pull;
mod push;
mod support;
