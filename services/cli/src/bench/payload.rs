//! The events a load run publishes and how a client recognises them: a CDC-shaped payload
//! whose `row_data.lg` carries `run:phase:seq:scheduled_ns:sent_ns`, padded to a chosen size.
//! The client finds the stamp by searching the frame text, without parsing the JSON: at
//! hundreds of thousands of deliveries a second the load tool must stay cheap.

/// Phase of an event: warm-up events fill caches and are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before measuring.
    Warmup,
    /// Counted.
    Measure,
}

impl Phase {
    fn code(self) -> u8 {
        match self {
            Self::Warmup => 0,
            Self::Measure => 1,
        }
    }
}

/// What a received event says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The run that published it.
    pub(crate) run: u32,
    /// Warm-up or measured.
    pub(crate) phase: Phase,
    /// Sequence number within the phase.
    pub(crate) seq: u64,
    /// When the open-loop schedule wanted it published (ns since the Unix epoch).
    pub(crate) scheduled_ns: u64,
    /// When it was handed to the publisher (ns since the Unix epoch).
    pub(crate) sent_ns: u64,
}

const MARK: &str = "\"lg\":\"";

/// The payload of one event; `pad` extra bytes keep its size near the chosen one.
pub(crate) fn render(company: &str, agent: &str, stamp: &Stamp, pad: usize) -> String {
    let mut out = String::with_capacity(160 + pad);
    out.push_str(r#"{"event_id":"bench:"#);
    push_num(&mut out, u64::from(stamp.run));
    out.push(':');
    push_num(&mut out, stamp.seq);
    out.push_str(r#"","company_id":""#);
    out.push_str(company);
    out.push_str(r#"","agent_id":""#);
    out.push_str(agent);
    out.push_str(r#"","row_data":{"#);
    out.push_str(MARK);
    push_num(&mut out, u64::from(stamp.run));
    out.push(':');
    push_num(&mut out, u64::from(stamp.phase.code()));
    out.push(':');
    push_num(&mut out, stamp.seq);
    out.push(':');
    push_num(&mut out, stamp.scheduled_ns);
    out.push(':');
    push_num(&mut out, stamp.sent_ns);
    out.push_str(r#"","pad":""#);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}}");
    out
}

fn push_num(out: &mut String, n: u64) {
    use std::fmt::Write;
    let _ = write!(out, "{n}");
}

/// The padding that brings a payload to about `target` bytes (the stamp's digits vary).
pub(crate) fn pad_for(target: usize, company: &str, agent: &str) -> usize {
    let probe = render(
        company,
        agent,
        &Stamp {
            run: u32::MAX,
            phase: Phase::Measure,
            seq: 1_000_000,
            scheduled_ns: 1_800_000_000_000_000_000,
            sent_ns: 1_800_000_000_000_000_000,
        },
        0,
    );
    target.saturating_sub(probe.len())
}

/// The stamp of a received frame, `None` for frames that carry none (`ready`, errors, other
/// publishers' events).
pub(crate) fn find(frame: &str) -> Option<Stamp> {
    let start = frame.find(MARK)? + MARK.len();
    let rest = &frame[start..];
    let text = &rest[..rest.find('"')?];
    let mut parts = text.split(':').map(|p| p.parse::<u64>().ok());
    let mut next = || parts.next().flatten();
    let run = u32::try_from(next()?).ok()?;
    let phase = match next()? {
        0 => Phase::Warmup,
        1 => Phase::Measure,
        _ => return None,
    };
    Some(Stamp {
        run,
        phase,
        seq: next()?,
        scheduled_ns: next()?,
        sent_ns: next()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            run: 7,
            phase: Phase::Measure,
            seq: 42,
            scheduled_ns: 1_700_000_000_000_000_000,
            sent_ns: 1_700_000_000_000_000_123,
        }
    }

    #[test]
    fn a_rendered_event_survives_the_edge_frame() {
        let payload = render("bench", "a3", &stamp(), 10);
        let value: serde_json::Value = serde_json::from_str(&payload).expect("valid json");
        assert_eq!(value["agent_id"], "a3");
        let frame = daisi_domain::event::render_event_frame(payload.as_bytes(), "chats")
            .expect("the edge renders it");
        assert_eq!(find(&frame), Some(stamp()));
    }

    #[test]
    fn padding_reaches_the_target_size() {
        let pad = pad_for(512, "bench", "a3");
        let len = render("bench", "a3", &stamp(), pad).len();
        assert!((480..=512).contains(&len), "{len}");
    }

    #[test]
    fn frames_without_a_stamp_are_ignored() {
        assert_eq!(find(r#"{"type":"ready"}"#), None);
        assert_eq!(find(r#"{"lg":"1:5:3:4:5"}"#), None);
        assert_eq!(find(r#"{"lg":"1:1:x:4:5"}"#), None);
        assert_eq!(find(r#"{"lg":"1:1:3:4"#), None);
    }
}
