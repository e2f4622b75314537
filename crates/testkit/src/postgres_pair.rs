//! A PostgreSQL primary and a streaming replica of one test alone, made by
//! the test with `initdb` and `pg_basebackup` on ports and in a folder of
//! their own, and stopped (immediately) and removed when dropped.
//!
//! The binaries are PostgreSQL's server tools: `SLUICE_TEST_PG_BIN` if set,
//! else the newest `/usr/lib/postgresql/*/bin` (Debian's layout). `initdb`
//! refuses to run as root, so a test run by root runs them as the
//! `postgres` user (with `runuser`), in a folder that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uuid::Uuid;

use crate::free_port;

/// A primary and its streaming replica, both running.
pub struct PostgresPair {
    bin: PathBuf,
    dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

impl PostgresPair {
    /// Makes and starts the primary, copies it with `pg_basebackup` into a
    /// replica that streams from it, and starts that; returns once both
    /// accept connections. Panics, saying what failed, when one cannot be
    /// made.
    pub fn start() -> PostgresPair {
        let dir = std::env::temp_dir().join(format!("sluice-pg-pair-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("the pair's folder");
        let pair = PostgresPair {
            bin: server_bin(),
            dir,
            primary_port: free_port(),
            replica_port: free_port(),
        };
        if running_as_root() {
            pair.run("chown", &["postgres".as_ref(), pair.dir.as_os_str()]);
        }
        let primary = pair.dir.join("primary");
        pair.tool(
            "initdb",
            &[
                "-D".as_ref(),
                primary.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        pair.configure(&primary, pair.primary_port);
        pair.start_server(&primary);
        let replica = pair.dir.join("replica");
        // -R: standby.signal and primary_conninfo, so it starts as a
        // replica streaming from the primary.
        pair.tool(
            "pg_basebackup",
            &[
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                pair.primary_port.to_string().as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-D".as_ref(),
                replica.as_os_str(),
                "-R".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
            ],
        );
        pair.configure(&replica, pair.replica_port);
        pair.start_server(&replica);
        pair
    }

    /// The primary's URL, without a database.
    pub fn primary_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.primary_port)
    }

    /// The replica's URL, without a database.
    pub fn replica_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.replica_port)
    }

    /// Stops the replica applying what it receives, as a replica that
    /// lags does: from now on it shows no commit it has not shown already.
    pub fn pause_replay(&self) {
        self.on_replica("SELECT pg_wal_replay_pause()");
    }

    /// Lets the replica catch up again.
    pub fn resume_replay(&self) {
        self.on_replica("SELECT pg_wal_replay_resume()");
    }

    fn on_replica(&self, sql: &str) {
        let psql = self.bin.join("psql");
        let port = self.replica_port.to_string();
        self.run(
            psql.to_str().expect("a UTF-8 path"),
            &[
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-d".as_ref(),
                "postgres".as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-c".as_ref(),
                sql.as_ref(),
            ],
        );
    }

    /// Its port, its own socket folder, and, on the replica, feedback to
    /// the primary so that the primary's vacuum does not cancel a long
    /// page read there (the setting a deployment needs too).
    fn configure(&self, data: &Path, port: u16) {
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nhot_standby_feedback = on\n",
            self.dir.display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("postgresql.conf");
    }

    fn start_server(&self, data: &Path) {
        let log = data.with_extension("log");
        self.tool(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Runs PostgreSQL's tool `name`, as `postgres` when we are root.
    fn tool(&self, name: &str, args: &[&std::ffi::OsStr]) {
        let tool = self.bin.join(name);
        if running_as_root() {
            let mut all = vec![
                "-u".as_ref(),
                "postgres".as_ref(),
                "--".as_ref(),
                tool.as_os_str(),
            ];
            all.extend_from_slice(args);
            self.run("runuser", &all);
        } else {
            self.run(tool.to_str().expect("a UTF-8 path"), args);
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let output = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn stop(&self, data: &Path) {
        if data.exists() {
            let tool = self.bin.join("pg_ctl");
            let mut command = if running_as_root() {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", "postgres", "--"]).arg(tool);
                runuser
            } else {
                Command::new(tool)
            };
            let _ = command
                .arg("-D")
                .arg(data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        self.stop(&self.dir.join("replica"));
        self.stop(&self.dir.join("primary"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// `SLUICE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<n>/bin`.
fn server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_TEST_PG_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server tools (initdb, pg_basebackup) under /usr/lib/postgresql: \
             install the postgresql package, or set SLUICE_TEST_PG_BIN to their folder"
        ),
    }
}
