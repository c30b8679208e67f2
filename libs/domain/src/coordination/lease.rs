//! Lease timing shared by pod and session leases: how long one lasts, how often it is renewed.

use std::time::Duration;

/// Lease timing settings that contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Renewing at or after expiry would let healthy leases lapse.
    #[error("lease renew interval ({renew:?}) must be shorter than the lease ({lease:?})")]
    RenewNotShorter {
        /// The lease duration.
        lease: Duration,
        /// The renew interval.
        renew: Duration,
    },
    /// A zero duration would spin or expire instantly.
    #[error("lease durations must be positive")]
    Zero,
}

/// How long a pod's or session's lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    lease: Duration,
    renew_every: Duration,
}

impl LeaseSettings {
    /// Default lease: 30 s.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// Default renew interval: 10 s, so two renewals can fail before the lease lapses.
    pub const DEFAULT_RENEW: Duration = Duration::from_secs(10);

    /// Settings with `renew_every < lease`, both positive.
    pub fn new(lease: Duration, renew_every: Duration) -> Result<Self, LeaseError> {
        if lease.is_zero() || renew_every.is_zero() {
            return Err(LeaseError::Zero);
        }
        if renew_every >= lease {
            return Err(LeaseError::RenewNotShorter {
                lease,
                renew: renew_every,
            });
        }
        Ok(Self { lease, renew_every })
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Self::DEFAULT_LEASE,
            renew_every: Self::DEFAULT_RENEW,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lease_settings_validate() {
        let defaults = LeaseSettings::default();
        assert_eq!(defaults.lease(), Duration::from_secs(30));
        assert_eq!(defaults.renew_every(), Duration::from_secs(10));
        assert!(LeaseSettings::new(Duration::from_secs(5), Duration::from_secs(5)).is_err());
        assert_eq!(
            LeaseSettings::new(Duration::ZERO, Duration::from_secs(1)),
            Err(LeaseError::Zero)
        );
        assert!(LeaseSettings::new(Duration::from_secs(5), Duration::from_secs(4)).is_ok());
    }
}
