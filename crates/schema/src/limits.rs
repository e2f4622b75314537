//! A connector's rate limits: how many requests, and how many records, each
//! of its tokens may send per second. A limit left unset (`None`) follows
//! the deployment's default (`SLUICE_DEFAULT_REQUESTS_PER_SECOND`,
//! `SLUICE_DEFAULT_RECORDS_PER_SECOND`), which is unlimited unless set.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, ProblemCode};

/// Rate limits per token, per second. Only [`RateLimits::check`] makes a
/// value from what an operator sent, so each one is within bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimits {
    pub requests_per_second: Option<NonZeroU32>,
    pub records_per_second: Option<NonZeroU32>,
}

impl RateLimits {
    /// The largest limit: far beyond what one gateway serves, and small
    /// enough that a second's worth of cells fits the rate limiter's `u32`.
    pub const MAX: u32 = 1_000_000_000;

    /// Neither limit set.
    pub fn is_unset(&self) -> bool {
        self.requests_per_second.is_none() && self.records_per_second.is_none()
    }

    /// These limits, each unset one taken from `defaults`.
    pub fn or(self, defaults: RateLimits) -> RateLimits {
        RateLimits {
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
            records_per_second: self.records_per_second.or(defaults.records_per_second),
        }
    }

    /// One limit as sent (`limits.<name>`): a whole number from 1 to
    /// [`RateLimits::MAX`].
    pub fn check(name: &str, value: i64) -> Result<NonZeroU32, Problem> {
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= Self::MAX)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                Problem::new(
                    ProblemCode::InvalidLimit,
                    format!("limits.{name}"),
                    format!(
                        "{name} must be a whole number from 1 to {}, or null for the default; got {value}",
                        Self::MAX
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_positive_and_bounded() {
        assert_eq!(
            RateLimits::check("requests_per_second", 1).unwrap().get(),
            1
        );
        assert_eq!(
            RateLimits::check("records_per_second", 1_000_000_000)
                .unwrap()
                .get(),
            1_000_000_000
        );
        for bad in [0, -1, 1_000_000_001, i64::MAX, i64::MIN] {
            let problem = RateLimits::check("records_per_second", bad).unwrap_err();
            assert_eq!(problem.code, ProblemCode::InvalidLimit);
            assert_eq!(problem.field, "limits.records_per_second");
        }
    }

    #[test]
    fn unset_limits_follow_the_defaults() {
        let n = |v| NonZeroU32::new(v);
        let own = RateLimits {
            requests_per_second: n(5),
            records_per_second: None,
        };
        let defaults = RateLimits {
            requests_per_second: n(100),
            records_per_second: n(1000),
        };
        assert_eq!(
            own.or(defaults),
            RateLimits {
                requests_per_second: n(5),
                records_per_second: n(1000)
            }
        );
        assert!(RateLimits::default().is_unset());
        assert_eq!(
            serde_json::to_value(own).unwrap(),
            serde_json::json!({"requests_per_second": 5, "records_per_second": null})
        );
    }
}
