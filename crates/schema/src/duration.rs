//! Durations as operators write them, in settings and in a connector's
//! `retention`: a positive whole number and one unit, `ms`, `s`, `m`, `h`
//! or `d` (`90m`, `12h`, `30d`). No fractions, no sums (`1h30m`), no
//! months or years, whose length varies: each text means one exact
//! duration, and [`format_duration`] writes it back in its largest exact
//! unit.

use std::time::Duration;

use crate::problem::{Problem, ProblemCode};

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses `90m`, `12h`, `30d`, `500ms`…; the reason when it is not one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, millis)| *millis);
    let (Some(millis), false) = (millis, number.is_empty()) else {
        return Err(format!(
            "{text:?} is not a duration like 90m, 12h or 30d (a whole number and one of ms, s, m, h, d)"
        ));
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis))
    {
        Some(0) => Err(format!("{text:?} is not a positive duration")),
        Some(total) => Ok(Duration::from_millis(total)),
        None => Err(format!("{text:?} is too long a duration")),
    }
}

/// `duration` in its largest exact unit: `5400s` reads `90m`, `86400s`
/// `1d`. Sub-millisecond parts are left out.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis() as u64;
    let (unit, length) = UNITS
        .iter()
        .find(|(_, length)| millis.is_multiple_of(*length))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{unit}", millis / length)
}

/// How long a connector keeps its records (and rejected records): whole
/// seconds, from one partition span up to [`Retention::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(Duration);

impl Retention {
    /// 100 years: far beyond any use, and within every date arithmetic.
    pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

    /// Parses a retention at least `min` long (the partition span: records
    /// are dropped a whole partition at a time).
    pub fn parse(text: &str, min: Duration) -> Result<Retention, Problem> {
        let problem =
            |message: String| Problem::new(ProblemCode::InvalidRetention, "retention", message);
        let duration = parse_duration(text).map_err(|why| problem(format!("retention: {why}")))?;
        if duration.subsec_nanos() != 0 {
            return Err(problem(format!(
                "retention must be a whole number of seconds, got {text:?}"
            )));
        }
        if duration < min {
            return Err(problem(format!(
                "retention must be at least the partition span, {} (SLUICE_PARTITION_SPAN), got {text:?}",
                format_duration(min)
            )));
        }
        if duration > Self::MAX {
            return Err(problem(format!(
                "retention must be at most {}, got {text:?}",
                format_duration(Self::MAX)
            )));
        }
        Ok(Retention(duration))
    }

    /// A retention as stored (seconds), trusted: only [`Retention::parse`]
    /// wrote it.
    pub fn from_secs(secs: u64) -> Retention {
        Retention(Duration::from_secs(secs))
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    pub fn duration(self) -> Duration {
        self.0
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_one_number_and_one_unit() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        for bad in [
            "",
            "0s",
            "d",
            "1",
            "1.5h",
            "-1d",
            "1h30m",
            "1 d",
            " 1d",
            "1D",
            "1w",
            "1y",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_written_in_their_largest_exact_unit() {
        for (text, normal) in [
            ("86400s", "1d"),
            ("5400s", "90m"),
            ("36h", "36h"),
            ("1000ms", "1s"),
            ("1500ms", "1500ms"),
            ("30d", "30d"),
        ] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), normal);
        }
    }

    #[test]
    fn retention_is_whole_seconds_between_a_span_and_a_century() {
        let day = Duration::from_secs(86_400);
        assert_eq!(Retention::parse("720h", day).unwrap().to_string(), "30d");
        assert_eq!(Retention::parse("1d", day).unwrap().as_secs(), 86_400);
        for bad in ["23h", "1500ms", "36501d", "soon", "0d"] {
            let problem = Retention::parse(bad, day).unwrap_err();
            assert_eq!(problem.code, ProblemCode::InvalidRetention, "{bad}");
            assert_eq!(problem.field, "retention");
        }
        assert!(Retention::parse("2s", Duration::from_secs(2)).is_ok());
    }
}
