//! The result of a load run: one document, printed as a Markdown table for people and written
//! as JSON for scripts (`make benchmark-load` reads the JSON).

use super::latency::Summary;
use super::procstat::Usage;
use super::publisher::Published;
use super::tally::Counts;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Settings the run used, so a figure can be reproduced.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) sockets: u64,
    pub(crate) rate: f64,
    pub(crate) duration_seconds: f64,
    pub(crate) warmup_seconds: f64,
    pub(crate) payload_bytes: usize,
    pub(crate) workers: usize,
    pub(crate) source_addresses: usize,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_rate: f64,
    pub(crate) sink: String,
    pub(crate) command: String,
}

/// Opening the sockets (first time, or after a storm).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Opening {
    pub(crate) ready: u64,
    pub(crate) failed: u64,
    pub(crate) retries: u64,
    /// Until the last socket settled.
    pub(crate) seconds: f64,
    pub(crate) per_second: f64,
    /// From the start of the opening to each socket's `ready`.
    pub(crate) time_to_ready: Summary,
    pub(crate) errors: Vec<String>,
}

/// What arrived.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Deliveries {
    #[serde(flatten)]
    pub(crate) counts: Counts,
    /// Owed deliveries that arrived, per second from the first send to the last arrival.
    pub(crate) per_second: f64,
    pub(crate) warmup: u64,
    pub(crate) foreign: u64,
    pub(crate) other_frames: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) mode: String,
    pub(crate) label: Option<String>,
    pub(crate) run: u32,
    pub(crate) started_at: String,
    pub(crate) settings: Settings,
    pub(crate) connect: Opening,
    pub(crate) storm: Option<Opening>,
    pub(crate) events: Option<Published>,
    pub(crate) deliveries: Option<Deliveries>,
    /// Publish → socket.
    pub(crate) latency: Option<Summary>,
    /// Scheduled publish time → socket (includes any delay of the publisher itself).
    pub(crate) latency_from_schedule: Option<Summary>,
    /// Sockets the edge closed, by close code.
    pub(crate) closes: BTreeMap<String, u64>,
    pub(crate) open_at_end: u64,
    /// Seconds the process window covered.
    pub(crate) window_seconds: f64,
    pub(crate) processes: Vec<Usage>,
    /// RSS of the edge before the sockets were opened.
    pub(crate) edge_rss_before_kib: Option<u64>,
    /// (edge RSS at the end − before) / open sockets.
    pub(crate) rss_per_socket_kib: Option<f64>,
    /// Edge CPU per socket and second held.
    pub(crate) edge_cpu_us_per_socket_second: Option<f64>,
    /// CPU of every process given, per measured event published (none when a process exited
    /// during the window: its CPU is only known until its last sample).
    pub(crate) cpu_us_per_event: Option<f64>,
    /// CPU of every process given, per delivery.
    pub(crate) cpu_us_per_delivery: Option<f64>,
}

fn ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2} ms")
    } else {
        format!("{x:.1} ms")
    }
}

fn latency_row(out: &mut String, name: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "| {name} | p50 {} · p90 {} · p99 {} · p99.9 {} · max {} ({} samples) |",
        ms(s.p50_ms),
        ms(s.p90_ms),
        ms(s.p99_ms),
        ms(s.p999_ms),
        ms(s.max_ms),
        s.count
    );
}

impl Report {
    /// The report as a Markdown table.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let title = self.label.as_deref().unwrap_or(&self.mode);
        let _ = writeln!(out, "### daisi bench {title}\n");
        let _ = writeln!(out, "`{}`\n", self.settings.command);
        let _ = writeln!(out, "| what | figure |\n|---|---|");
        let c = &self.connect;
        let _ = writeln!(
            out,
            "| sockets | {} ready, {} failed, {} retries; opened in {:.2} s = {:.0} connects/s |",
            c.ready, c.failed, c.retries, c.seconds, c.per_second
        );
        latency_row(&mut out, "time to ready (opening)", &c.time_to_ready);
        if let Some(s) = &self.storm {
            let _ = writeln!(
                out,
                "| reconnect storm | {} of {} ready again in {:.2} s ({} failed, {} retries) |",
                s.ready,
                s.ready + s.failed,
                s.seconds,
                s.failed,
                s.retries
            );
            latency_row(&mut out, "time to ready (storm)", &s.time_to_ready);
        }
        if let Some(e) = &self.events {
            let _ = writeln!(
                out,
                "| events published | {} in {:.2} s ({:.0}/s), {} failed; publisher behind schedule p99 {} max {} |",
                e.sent,
                e.seconds,
                e.sent as f64 / e.seconds.max(1e-9),
                e.failed.len(),
                ms(e.behind_p99_ms),
                ms(e.behind_max_ms)
            );
        }
        if let Some(d) = &self.deliveries {
            let k = &d.counts;
            let _ = writeln!(
                out,
                "| deliveries | {} of {} owed, **{} lost**, **{} duplicates**, {} reordered, {} unexpected; {:.0} delivered/s |",
                k.unique, k.expected, k.lost, k.duplicates, k.reordered, k.unexpected, d.per_second
            );
            if k.never_opened_sockets > 0 {
                let _ = writeln!(
                    out,
                    "| sockets that never opened | {} (their {} deliveries are not counted as owed or lost) |",
                    k.never_opened_sockets, k.owed_to_never_opened
                );
            }
        }
        if let Some(l) = &self.latency {
            latency_row(&mut out, "**latency** publish → socket", l);
        }
        if let Some(l) = &self.latency_from_schedule {
            latency_row(&mut out, "latency from schedule", l);
        }
        for p in &self.processes {
            let _ = writeln!(
                out,
                "| {} (pid {}) | {}{:.2} CPU s = {:.2} cores; RSS {} → {} KiB (max {}) |",
                p.name,
                p.pid,
                if p.exited {
                    "**exited during the run**, until its last sample: "
                } else {
                    ""
                },
                p.cpu_seconds,
                p.cores,
                p.rss_start_kib,
                p.rss_end_kib,
                p.rss_max_kib
            );
        }
        if let Some(x) = self.rss_per_socket_kib {
            let _ = writeln!(out, "| **edge RSS per socket** | {x:.1} KiB |");
        }
        if let Some(x) = self.edge_cpu_us_per_socket_second {
            let _ = writeln!(out, "| edge CPU per idle socket | {x:.2} µs per second |");
        }
        if let Some(x) = self.cpu_us_per_event {
            let _ = writeln!(out, "| **CPU per event** (processes above) | {x:.1} µs |");
        }
        if let Some(x) = self.cpu_us_per_delivery {
            let _ = writeln!(out, "| CPU per delivery (processes above) | {x:.2} µs |");
        }
        if !self.closes.is_empty() {
            let _ = writeln!(out, "| closed by the edge | {:?} |", self.closes);
        }
        let errors: Vec<&String> = c
            .errors
            .iter()
            .chain(self.storm.iter().flat_map(|s| s.errors.iter()))
            .chain(self.events.iter().flat_map(|e| e.errors.iter()))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "| errors | {errors:?} |");
        }
        out
    }
}
