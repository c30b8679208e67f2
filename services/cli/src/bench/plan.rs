//! Who is who in a load run, and which event goes where: the one place that maps a socket
//! index to its company, agent and user, and an event's sequence number to the sockets that
//! must receive it. The driver publishes by it and the workers account by it, so both sides
//! agree on what "expected" means without exchanging lists.

use serde::{Deserialize, Serialize};

/// How sockets share agents, and so how events reach them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Shape {
    /// Every socket has an agent of its own; event `seq` goes to socket `seq % sockets`.
    Spread,
    /// Every socket belongs to agent 0; every event goes to every socket.
    Fanout,
}

/// The run's layout: company, how many sockets, and how events map onto them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// Company of every socket.
    pub(crate) company: String,
    /// Sockets in the whole run (over all workers).
    pub(crate) sockets: u64,
    /// How events reach sockets.
    pub(crate) shape: Shape,
}

impl Plan {
    /// The agent socket `index` connects as.
    pub(crate) fn agent_of_socket(&self, index: u64) -> u64 {
        match self.shape {
            Shape::Spread => index,
            Shape::Fanout => 0,
        }
    }

    /// Agent id text of agent number `n`.
    pub(crate) fn agent_id(n: u64) -> String {
        format!("a{n}")
    }

    /// User id text of socket `index` (one session per socket).
    pub(crate) fn user_id(index: u64) -> String {
        format!("u{index}")
    }

    /// The agent event `seq` is published to.
    pub(crate) fn agent_of_event(&self, seq: u64) -> u64 {
        match self.shape {
            Shape::Spread => seq % self.sockets.max(1),
            Shape::Fanout => 0,
        }
    }

    /// The subject event `seq` is published on.
    pub(crate) fn subject(&self, prefix: &str, seq: u64) -> String {
        format!(
            "{prefix}.{}.{}.chats",
            self.company,
            Self::agent_id(self.agent_of_event(seq))
        )
    }

    /// Where event `seq` lands in socket `index`'s record: `None` when the socket must not
    /// receive it at all. Events of one socket get slots 0, 1, 2, ... in publish order.
    pub(crate) fn slot(&self, index: u64, seq: u64) -> Option<u64> {
        match self.shape {
            Shape::Spread => {
                let n = self.sockets.max(1);
                (seq % n == index).then_some(seq / n)
            }
            Shape::Fanout => (index < self.sockets).then_some(seq),
        }
    }

    /// How many of the first `published` events socket `index` must receive.
    pub(crate) fn expected(&self, index: u64, published: u64) -> u64 {
        if index >= self.sockets {
            return 0;
        }
        match self.shape {
            Shape::Spread => {
                let n = self.sockets.max(1);
                // seq = index, index + n, index + 2n, ... below `published`.
                if published > index {
                    (published - index).div_ceil(n)
                } else {
                    0
                }
            }
            Shape::Fanout => published,
        }
    }

    /// Deliveries the whole run owes for `published` events, counting each socket once.
    pub(crate) fn expected_total(&self, published: u64) -> u64 {
        match self.shape {
            Shape::Spread => published,
            Shape::Fanout => published.saturating_mul(self.sockets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(shape: Shape, sockets: u64) -> Plan {
        Plan {
            company: "bench".into(),
            sockets,
            shape,
        }
    }

    #[test]
    fn spread_sends_each_event_to_one_socket_round_robin() {
        let p = plan(Shape::Spread, 3);
        assert_eq!(p.subject("websocket", 4), "websocket.bench.a1.chats");
        assert_eq!(p.slot(1, 4), Some(1));
        assert_eq!(p.slot(0, 4), None);
        // 0..7 -> sockets 0,1,2,0,1,2,0
        assert_eq!(
            [p.expected(0, 7), p.expected(1, 7), p.expected(2, 7)],
            [3, 2, 2]
        );
        assert_eq!(p.expected(3, 7), 0);
        let total: u64 = (0..3).map(|i| p.expected(i, 7)).sum();
        assert_eq!(total, p.expected_total(7));
    }

    #[test]
    fn fanout_sends_every_event_to_every_socket() {
        let p = plan(Shape::Fanout, 4);
        assert_eq!(p.agent_of_socket(3), 0);
        assert_eq!(p.subject("wa", 9), "wa.bench.a0.chats");
        assert_eq!(p.slot(3, 9), Some(9));
        assert_eq!(p.expected(2, 10), 10);
        assert_eq!(p.expected_total(10), 40);
    }
}
