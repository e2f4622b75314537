//! End-to-end: the real binaries run as separate processes against
//! PostgreSQL and NATS, and the tests walk a user's story over HTTP only.

mod all_in_one;
mod backlog;
mod logs;
mod nats_cluster;
mod nats_faults;
mod pg_replica;
mod scale_out;
mod story;
mod support;
