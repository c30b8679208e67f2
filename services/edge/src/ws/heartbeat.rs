//! When a socket pings its client and when it gives up on a silent one.
//!
//! One timer serves both deadlines: it is armed at the earlier of the next ping and the pong
//! deadline (`pong_wait` after the client was last heard from). So a silent client is closed
//! at its own deadline, not at the first ping tick after it, and an idle socket still holds a
//! single timer. Hearing from the client only moves an instant; the timer is re-armed when it
//! fires, so a chatty client costs no timer updates.

use std::time::Duration;
use tokio::time::Instant;

/// What is due when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet (the timer fired for a deadline that has since moved).
    Nothing,
    /// Send a ping.
    Ping,
    /// The client was silent for `pong_wait`: close the socket.
    Silent,
}

/// The ping schedule and pong deadline of one socket.
#[derive(Debug)]
pub struct Heartbeat {
    /// Ping period (`DAISI_EDGE_PING_INTERVAL`).
    interval: Duration,
    /// Allowed silence (`DAISI_EDGE_PONG_WAIT`).
    wait: Duration,
    /// When the next ping goes out.
    next_ping: Instant,
    /// When the client was last heard from (a pong or any other frame, compat.md).
    last_seen: Instant,
}

impl Heartbeat {
    /// A schedule starting at `now`, whose first ping goes out after `interval + offset`
    /// (the offset spreads the pings of sockets opened together).
    pub fn new(now: Instant, interval: Duration, wait: Duration, offset: Duration) -> Self {
        Self {
            interval,
            wait,
            next_ping: now + offset + interval,
            last_seen: now,
        }
    }

    /// The client sent something at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// When a silent client is closed.
    pub fn deadline(&self) -> Instant {
        self.last_seen + self.wait
    }

    /// When the timer must fire next.
    pub fn wake_at(&self) -> Instant {
        self.next_ping.min(self.deadline())
    }

    /// What is due at `now`; a ping that is due schedules the next one.
    pub fn due(&mut self, now: Instant) -> Due {
        if now >= self.deadline() {
            return Due::Silent;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            return Due::Ping;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);
    const WAIT: Duration = Duration::from_secs(90);

    #[test]
    fn a_silent_client_is_due_at_its_deadline_not_at_a_ping_tick() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(t0, INTERVAL, WAIT, Duration::from_secs(7));
        let mut pings = 0;
        let closed_at = loop {
            let now = beat.wake_at();
            match beat.due(now) {
                Due::Ping => pings += 1,
                Due::Silent => break now,
                Due::Nothing => panic!("woken for nothing at {:?}", now - t0),
            }
        };
        // Pings at 37 s and 67 s, then the deadline at 90 s (the next tick would be 97 s).
        assert_eq!(pings, 2);
        assert_eq!(closed_at - t0, WAIT);
    }

    #[test]
    fn hearing_from_the_client_moves_the_deadline() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(t0, INTERVAL, WAIT, Duration::ZERO);
        assert_eq!(beat.due(t0 + INTERVAL), Due::Ping);
        beat.heard(t0 + Duration::from_secs(31));
        // Still armed for the next ping, and the old deadline no longer closes.
        assert_eq!(beat.wake_at(), t0 + INTERVAL * 2);
        assert_eq!(beat.due(t0 + WAIT), Due::Ping);
        assert_eq!(beat.deadline(), t0 + Duration::from_secs(31) + WAIT);
        assert_eq!(beat.due(t0 + Duration::from_secs(100)), Due::Nothing);
        assert_eq!(beat.due(t0 + Duration::from_secs(121)), Due::Silent);
    }
}
