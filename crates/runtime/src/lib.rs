//! What Sluice's services share about their platform, written once.
//!
//! - [`bus`]: NATS names derived from the namespace, message headers, the
//!   key-value document of a connector, the record batch on the stream, and
//!   the set-up of the stream and bucket.
//! - [`backlog`]: what is accepted and not yet stored, per connector, read
//!   from the records stream.
//! - [`catalog`]: a live copy of every connector's definition, loaded from
//!   the bucket and kept current by watching it, which decides who may use
//!   a connector's routes.
//! - [`startup`]: a service's NATS side brought up, retried until NATS
//!   answers, the same in every service.
//! - [`store`]: the PostgreSQL side: connecting and migrating, the layout of
//!   each connector's records table and the SQL that builds and converts it.
//! - [`partitions`]: the time partitions of a records table, made ahead,
//!   dropped by retention, and the online migration of tables made before.
//! - [`token`]: tokens, their form and checksum, their hashes, and
//!   constant-time checks.
//! - [`principal`]: who is calling, as a valid token tells.
//! - [`token_use`]: when tokens were last used, noted in memory and
//!   reported now and then.
//! - [`http`]: problem+json errors, bearer tokens, health and metrics routes,
//!   request ids, and serving with graceful shutdown.
//! - [`nats_server`]: finding a current local nats-server binary.
//! - [`throttle`]: failed authentication throttled per client address.
//! - [`rate_limit`]: per-token rate limits, each replica taking its share.
//! - [`settings`] and [`telemetry`]: configuration and logging.
//!
//! It knows nothing of any one service's routes; services decide what to
//! serve, this crate only makes sure they agree on names and formats.

pub mod backlog;
pub mod bus;
pub mod catalog;
pub mod http;
pub mod nats_server;
pub mod partitions;
pub mod principal;
pub mod rate_limit;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod token;
pub mod token_use;

pub use settings::Settings;
