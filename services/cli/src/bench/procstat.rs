//! CPU time and resident memory of the processes under test, read from /proc: `--pid
//! name=PID` names one, `--proc NAME` finds the one process whose command name is NAME.

use anyhow::{Context, bail};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on every Linux build we know).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process the report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Label in the report (`edge`, `router`, `nats-server`, ...).
    pub(crate) name: String,
    /// Its pid.
    pub(crate) pid: u32,
}

/// Parses `name=PID`.
pub(crate) fn parse_pid(text: &str) -> Result<Target, String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not name=PID (e.g. edge=1234)"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("`{pid}` in `{text}` is not a pid"))?;
    Ok(Target {
        name: name.trim().to_owned(),
        pid,
    })
}

/// The single process whose command name (`/proc/PID/comm`) is `name`.
pub(crate) fn find(name: &str) -> anyhow::Result<Target> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // comm is cut at 15 bytes.
        let short: String = name.chars().take(15).collect();
        if comm.trim_end() == short {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(Target {
            name: name.to_owned(),
            pid: *pid,
        }),
        [] => bail!("no process named {name}: pass --pid {name}=PID"),
        many => bail!(
            "{} processes named {name} ({many:?}): pass --pid {name}=PID",
            many.len()
        ),
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// User + system CPU time so far.
    pub(crate) cpu: Duration,
    /// Resident set size.
    pub(crate) rss_kib: u64,
    /// When it was read.
    pub(crate) at: Instant,
}

/// Reads `pid` now; `None` when it is gone.
pub(crate) fn read(pid: u32) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Reading {
        cpu: Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND),
        rss_kib,
        at: Instant::now(),
    })
}

/// What a process used over a window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Usage {
    /// Label.
    pub(crate) name: String,
    /// Pid.
    pub(crate) pid: u32,
    /// CPU seconds (user + system) in the window.
    pub(crate) cpu_seconds: f64,
    /// Average cores busy in the window.
    pub(crate) cores: f64,
    /// RSS at the start of the window.
    pub(crate) rss_start_kib: u64,
    /// RSS at the end.
    pub(crate) rss_end_kib: u64,
    /// Highest RSS seen by the samples in between.
    pub(crate) rss_max_kib: u64,
    /// The process was gone at the end of the window: the figures above stop at its last
    /// sample, so its CPU is a lower bound.
    pub(crate) exited: bool,
}

/// One target's readings in a window.
#[derive(Debug)]
struct Sampled {
    target: Target,
    start: Reading,
    /// The latest successful reading (where a process that exits stopped).
    last: Reading,
    max_rss_kib: u64,
}

/// Readings of every target from the start of a window.
#[derive(Debug)]
pub(crate) struct Window {
    targets: Vec<Sampled>,
}

impl Window {
    /// Starts a window now; targets that cannot be read are an error (a wrong pid).
    pub(crate) fn start(targets: &[Target]) -> anyhow::Result<Self> {
        let targets = targets
            .iter()
            .map(|t| {
                let r = read(t.pid)
                    .with_context(|| format!("cannot read /proc/{} ({})", t.pid, t.name))?;
                Ok(Sampled {
                    target: t.clone(),
                    start: r,
                    last: r,
                    max_rss_kib: r.rss_kib,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { targets })
    }

    /// Notes the current RSS of every target (for the maximum).
    pub(crate) fn sample(&mut self) {
        for t in &mut self.targets {
            if let Some(r) = read(t.target.pid) {
                t.max_rss_kib = t.max_rss_kib.max(r.rss_kib);
                t.last = r;
            }
        }
    }

    /// Ends the window: what each target used since the start (until its last sample if it
    /// exited meanwhile).
    pub(crate) fn finish(self) -> Vec<Usage> {
        self.targets
            .into_iter()
            .map(|t| {
                let (end, exited) = match read(t.target.pid) {
                    Some(r) => (r, false),
                    None => (t.last, true),
                };
                let cpu = end.cpu.saturating_sub(t.start.cpu).as_secs_f64();
                let wall = end.at.duration_since(t.start.at).as_secs_f64().max(1e-9);
                Usage {
                    name: t.target.name,
                    pid: t.target.pid,
                    cpu_seconds: cpu,
                    cores: cpu / wall,
                    rss_start_kib: t.start.rss_kib,
                    rss_end_kib: end.rss_kib,
                    rss_max_kib: t.max_rss_kib.max(end.rss_kib),
                    exited,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).expect("our own /proc entry");
        assert!(me.rss_kib > 0);
        assert!(read(u32::MAX).is_none());
    }

    #[test]
    fn pid_arguments_name_the_process() {
        assert_eq!(
            parse_pid("edge=42"),
            Ok(Target {
                name: "edge".into(),
                pid: 42
            })
        );
        assert!(parse_pid("edge").is_err());
        assert!(parse_pid("edge=x").is_err());
    }

    #[test]
    fn a_window_measures_cpu_spent() {
        let me = Target {
            name: "me".into(),
            pid: std::process::id(),
        };
        let window = Window::start(std::slice::from_ref(&me)).expect("readable");
        let start = read(me.pid).expect("readable").cpu;
        // Spin until /proc shows 100 ms of CPU spent (however long a busy machine takes to
        // give it), then the window must report at least that.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        while read(me.pid).expect("readable").cpu.saturating_sub(start) < Duration::from_millis(100)
        {
            assert!(Instant::now() < deadline, "no CPU time in 60 s");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
        }
        let usage = window.finish();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].cpu_seconds >= 0.1, "{usage:?}");
        assert!(!usage[0].exited, "{usage:?}");
    }

    #[test]
    fn a_process_that_exits_is_marked_not_reported_idle() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep runs");
        let target = Target {
            name: "sleeper".into(),
            pid: child.id(),
        };
        let mut window = Window::start(std::slice::from_ref(&target)).expect("readable");
        window.sample();
        child.kill().expect("kill");
        child.wait().expect("reaped");
        let usage = window.finish();
        assert!(usage[0].exited, "{usage:?}");
        assert!(
            usage[0].rss_end_kib > 0,
            "figures stop at the last sample: {usage:?}"
        );
    }
}
