//! A stand-in NATS server that announces a version of our choosing.

use std::io::{BufRead, BufReader, Write};

/// Listens on a free port, announces `version` in its `INFO` line and
/// answers PINGs: enough for a client to connect and read the version, with
/// no nats-server binary. Returns its URL.
pub fn fake_nats(version: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let info = serde_json::json!({
                    "server_id": "FAKE", "server_name": "fake", "version": version,
                    "proto": 1, "go": "go1.19", "host": "127.0.0.1", "port": port,
                    "headers": true, "max_payload": 1_048_576, "jetstream": true,
                });
                if write!(stream, "INFO {info}\r\n").is_err() {
                    return;
                }
                let reader = BufReader::new(stream.try_clone().unwrap());
                for line in reader.lines() {
                    let Ok(line) = line else { return };
                    if line.starts_with("PING") && stream.write_all(b"PONG\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("nats://127.0.0.1:{port}")
}
