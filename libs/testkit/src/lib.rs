//! Test support shared by the daisi test suites: start a service binary with a given
//! environment, learn the addresses it bound from its JSON logs (so tests can use port 0 and
//! never race for ports), stop it with SIGTERM or SIGKILL, and show its logs when a test fails.
//! Also private backends: one `redis-server`, a Redis Cluster, one `nats-server`, a NATS cluster.

mod contract;
pub mod nats;
mod nats_cluster;
pub mod ports;
mod process;
mod redis;
mod redis_cluster;

pub use contract::{assert_refuses_config, assert_serves_and_stops, get_json, http_client};
pub use nats_cluster::NatsCluster;
pub use process::{Exited, ServiceProcess, SpawnError, rss_kib, run_to_exit, run_with_args};
pub use redis::{RedisServer, RedisServerError};
pub use redis_cluster::{ClusterOptions, NodeInfo, RedisCluster, RedisClusterError};
