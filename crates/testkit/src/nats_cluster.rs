//! A JetStream cluster of three `nats-server` processes of one test alone,
//! each on ports and a store directory of its own, for tests that kill and
//! restart a node while the shared server stays up for the others.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use uuid::Uuid;

use crate::{free_port, nats_server_binary, wait_until_answers};

/// One node: its client and route ports, and its process while it runs.
struct Node {
    name: String,
    port: u16,
    route_port: u16,
    child: Option<Child>,
}

/// Three nodes in one JetStream cluster. Every node is killed, and the
/// folder of their stores and configurations removed, when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts three nodes and waits until each answers.
    pub fn start() -> NatsCluster {
        let dir = std::env::temp_dir().join(format!("sluice-nats-cluster-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("the cluster's folder");
        let nodes = (1..=3)
            .map(|n| Node {
                name: format!("n{n}"),
                port: free_port(),
                route_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster { nodes, dir };
        for node in 0..cluster.nodes.len() {
            cluster.write_config(node);
        }
        for node in 0..cluster.nodes.len() {
            cluster.restart(node);
        }
        cluster
    }

    /// Every node's URL, separated by commas, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of node `node` (`n1`, `n2`, `n3`), as JetStream
    /// names a stream's leader and replicas.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The node that JetStream calls `name`.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Kills node `node` with SIGKILL, as a crash or a lost machine does.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `node` again, on its ports and store, and waits until it
    /// answers.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        let config = self.dir.join(format!("{}.conf", self.nodes[node].name));
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.nodes[node].name)))
            .expect("the node's log");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.nodes[node].child = Some(child);
        let port = self.nodes[node].port;
        assert!(
            wait_until_answers(port),
            "node {} of the cluster does not answer on port {port}",
            self.nodes[node].name
        );
    }

    /// What JetStream's own guidance asks of a cluster that must lose
    /// nothing acknowledged (and Jepsen's 2025 analysis of NATS found lost
    /// without it): every write flushed to disk before it counts
    /// (`sync_interval: always`).
    fn write_config(&self, node: usize) {
        let Node {
            name,
            port,
            route_port,
            ..
        } = &self.nodes[node];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
            .collect();
        let store = self.dir.join(name);
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n\
             cluster {{\n  name: sluice-test\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n",
            routes.join(", ")
        );
        std::fs::write(self.dir.join(format!("{name}.conf")), config).expect("the node's config");
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
