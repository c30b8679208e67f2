//! The per-address budget of the public port: upgrades and token requests from one client
//! address beyond `DAISI_EDGE_ADDRESS_RATE_PER_SECOND` (burst `_BURST`) get 429
//! `RateLimitExceeded` with `Retry-After`, before any authentication work is done for them.
//!
//! A GCRA token bucket per address (governor); addresses whose bucket is full again are
//! forgotten by [`AddressBudget::forget_idle`], which the edge runs periodically, so the map
//! holds only addresses seen within the last refill period.

use super::client_addr::{budget_key, client_ip};
use super::error;
use crate::config;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use daisi_domain::ErrorBody;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};
use ipnet::IpNet;
use prometheus::IntCounter;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// See the module docs.
#[derive(Debug)]
pub struct AddressBudget {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpNet>,
    refused: IntCounter,
}

impl AddressBudget {
    /// A budget of `settings`, counting refusals in `refused`.
    pub fn new(
        settings: config::AddressBudget,
        trusted_proxies: Vec<IpNet>,
        refused: IntCounter,
    ) -> Arc<Self> {
        let per_second = NonZeroU32::new(settings.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            trusted_proxies,
            refused,
        })
    }

    /// Charges one request of `ip`; `Err` carries how long until the next one would pass.
    pub fn charge(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&budget_key(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the buckets that are full again (indistinguishable from new ones).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses currently remembered.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Middleware of the budgeted routes.
pub async fn layer(
    State(budget): State<Arc<AddressBudget>>,
    request: Request,
    next: Next,
) -> Response {
    // The accept loop always records the peer; without it there is no key to charge.
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return next.run(request).await;
    };
    let ip = client_ip(peer.ip(), request.headers(), &budget.trusted_proxies);
    match budget.charge(ip) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            budget.refused.inc();
            too_many(wait)
        }
    }
}

/// 429 `RateLimitExceeded` with `Retry-After` in whole seconds (at least 1).
fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response =
        error::with_status(StatusCode::TOO_MANY_REQUESTS, &ErrorBody::rate_limited());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: u32, burst: u32) -> Arc<AddressBudget> {
        AddressBudget::new(
            config::AddressBudget { per_second, burst },
            Vec::new(),
            IntCounter::new("refused", "refused").expect("counter"),
        )
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let budget = budget(1, 3);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(budget.charge(a).is_ok());
        }
        let wait = budget.charge(a).expect_err("over budget");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(budget.charge(b).is_ok(), "another address is not affected");
        assert_eq!(budget.tracked(), 2);
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        for (wait, expected) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1_000), "1"),
            (Duration::from_millis(1_001), "2"),
        ] {
            let response = too_many(wait);
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], expected);
        }
    }
}
