//! The outcome of a run: one Markdown table for people, the same rows and
//! every measurement behind them as JSON.

use serde::Serialize;

use crate::Sizes;
use crate::measure::Machine;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub stage: String,
    pub sluice: String,
    pub raw_limit: String,
    /// Sluice divided by the raw limit, where both measure the same thing.
    pub ratio: Option<f64>,
    pub target: String,
    /// Whether the target was met; `None` where there is no target.
    pub met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub mode: &'static str,
    pub started_at: String,
    pub machine: Machine,
    pub sizes: Sizes,
    pub rows: Vec<Row>,
    /// Every number measured, by stage.
    pub details: serde_json::Value,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Sluice benchmark ({} mode), {} cores ({}), {} GiB, PostgreSQL {}, nats-server {}\n\n",
            self.mode,
            self.machine.cores,
            self.machine.cpu_model,
            self.machine.memory_gib,
            self.machine.postgres,
            self.machine.nats_server,
        ));
        out.push_str("| stage | Sluice | raw limit | ratio | target |\n");
        out.push_str("|---|---|---|---|---|\n");
        for row in &self.rows {
            let ratio = row.ratio.map_or("–".to_owned(), |r| format!("{r:.2}"));
            let target = match row.met {
                Some(true) => format!("{} ✓", row.target),
                Some(false) => format!("{} ✗", row.target),
                None => row.target.clone(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                row.stage, row.sluice, row.raw_limit, ratio, target
            ));
        }
        if self.mode == "smoke" {
            out.push_str("\nSmoke mode: tiny sizes, the numbers mean nothing.\n");
        }
        out
    }
}

/// `12 345`-style thousands for rates.
pub(crate) fn count(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn ratio(sluice: f64, raw: f64) -> Option<f64> {
    (raw > 0.0).then(|| crate::measure::round2(sluice / raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1000.0), "1 000");
        assert_eq!(count(1234567.0), "1 234 567");
    }
}
