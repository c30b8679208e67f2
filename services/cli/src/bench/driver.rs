//! One load run: start the workers, open the sockets, run the mode's workload while the
//! processes under test are sampled, collect the workers' tallies, print and save the report.

use super::latency::Latency;
use super::payload::Phase;
use super::plan::{Plan, Shape};
use super::procstat::{self, Target, Window};
use super::protocol::{Command, Opened, Received, Reply, Setup};
use super::publisher::{self, Published, Schedule, Sink};
use super::report::{Deliveries, Opening, Report, Settings};
use super::{BenchArgs, Mode};
use crate::output;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest wait for the workers to open their sockets.
const OPEN_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait for a worker's answer to `Report`.
const REPORT_DEADLINE: Duration = Duration::from_secs(60);
/// Highest `--rate`: far beyond what one publisher sends, low enough that event counts and
/// schedule arithmetic stay exact.
const MAX_RATE: f64 = 10_000_000.0;
/// Highest `--connect-rate`.
const MAX_CONNECT_RATE: f64 = 1_000_000.0;

/// Progress of one worker, or of all of them.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    ready: u64,
    failed: u64,
    /// First arrivals of owed measured events.
    arrived: u64,
    /// Deliveries owed, once the worker was told every measured event is out.
    owed: Option<u64>,
}

/// The worker processes and their answers.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    replies: mpsc::Receiver<(usize, Option<Reply>)>,
    /// Latest progress of each worker.
    progress: Vec<Progress>,
}

impl Workers {
    async fn spawn(setups: Vec<Setup>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program to start workers")?;
        let (tx, replies) = mpsc::channel(1024);
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (id, setup) in setups.iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("bench-worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_string(setup)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Reply>(&line) {
                        Ok(reply) => {
                            if tx.send((id, Some(reply))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            eprintln!("daisi bench: worker {id} said something odd ({e}): {line}")
                        }
                    }
                }
                let _ = tx.send((id, None)).await;
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Self {
            progress: vec![Progress::default(); children.len()],
            children,
            stdins,
            replies,
        })
    }

    fn len(&self) -> usize {
        self.children.len()
    }

    async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(command)?;
        line.push('\n');
        for stdin in &mut self.stdins {
            stdin
                .write_all(line.as_bytes())
                .await
                .context("a worker's stdin closed")?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Progress summed over the workers; `owed` only once every worker knows it.
    fn totals(&self) -> Progress {
        self.progress.iter().fold(
            Progress {
                owed: Some(0),
                ..Progress::default()
            },
            |a, p| Progress {
                ready: a.ready + p.ready,
                failed: a.failed + p.failed,
                arrived: a.arrived + p.arrived,
                owed: a.owed.zip(p.owed).map(|(a, b)| a + b),
            },
        )
    }

    /// The next reply, updating progress; an error when a worker exited.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<Option<(usize, Reply)>> {
        let Ok(next) = tokio::time::timeout_at(deadline, self.replies.recv()).await else {
            return Ok(None);
        };
        match next {
            Some((id, Some(reply))) => {
                if let Reply::Progress {
                    ready,
                    failed,
                    arrived,
                    owed,
                } = &reply
                {
                    self.progress[id] = Progress {
                        ready: *ready,
                        failed: *failed,
                        arrived: *arrived,
                        owed: *owed,
                    };
                }
                Ok(Some((id, reply)))
            }
            Some((id, None)) => bail!("worker {id} exited unexpectedly (see its errors above)"),
            None => bail!("every worker exited"),
        }
    }

    /// One answer of each worker picked by `pick`, calling `tick` on progress.
    async fn collect<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(Reply) -> Option<T>,
        mut tick: impl FnMut(&Self),
    ) -> anyhow::Result<Vec<T>> {
        let deadline = Instant::now() + deadline;
        let mut answers: Vec<Option<T>> = (0..self.len()).map(|_| None).collect();
        while answers.iter().any(Option::is_none) {
            let Some((id, reply)) = self.next(deadline).await? else {
                bail!("workers did not report {what} in time");
            };
            if let Some(answer) = pick(reply) {
                answers[id] = Some(answer);
            } else {
                tick(self);
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Tells the workers to close their sockets and waits for them to exit.
    async fn quit(mut self) {
        let _ = self.send(&Command::Quit).await;
        drop(self.stdins);
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_owned());
    bar
}

/// Prints a progress line for logs (the bar only draws on a terminal).
fn note(text: &str) {
    eprintln!("daisi bench: {text}");
}

fn opening(opened: &[Opened]) -> Opening {
    let mut time_to_ready = Latency::default();
    let mut o = Opening::default();
    for w in opened {
        o.ready += w.ready;
        o.failed += w.failed;
        o.retries += w.retries;
        o.seconds = o.seconds.max(w.seconds);
        time_to_ready.add(&w.time_to_ready);
        for e in &w.errors {
            if !o.errors.contains(e) {
                o.errors.push(e.clone());
            }
        }
    }
    o.per_second = o.ready as f64 / o.seconds.max(1e-9);
    o.time_to_ready = time_to_ready.summary();
    o
}

fn targets(args: &BenchArgs) -> anyhow::Result<Vec<Target>> {
    let mut targets = args.pids.clone();
    for name in &args.procs {
        targets.push(procstat::find(name)?);
    }
    for t in &targets {
        procstat::read(t.pid).with_context(|| format!("no process {} ({})", t.pid, t.name))?;
    }
    Ok(targets)
}

/// The bench opens plain TCP sockets (no TLS library is built in): an `https` edge would get
/// `ws://` on port 443.
fn check_edge(edge: &url::Url) -> anyhow::Result<()> {
    match edge.scheme() {
        "http" | "ws" => Ok(()),
        "https" | "wss" => bail!(
            "--edge {}: daisi bench speaks plain ws:// only (no TLS); point it at the edge's \
             plain HTTP port (DAISI_EDGE_HTTP_ADDR, e.g. http://127.0.0.1:8080) rather than a \
             TLS front",
            crate::redact::url(edge)
        ),
        other => bail!("--edge must be an http:// or ws:// URL, not {other}://"),
    }
}

async fn edge_addr(edge: &url::Url) -> anyhow::Result<(SocketAddr, String)> {
    check_edge(edge)?;
    let host = edge.host_str().context("--edge has no host")?;
    let port = edge.port_or_known_default().context("--edge has no port")?;
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host} has no IPv4 address"))?;
    Ok((addr, format!("{host}:{port}")))
}

/// A rate flag: a finite number per second from 0.001 to `max`, or 0 where `zero` says what
/// 0 means. An unchecked `inf` or `1e300` overflows the schedule or makes a zero pacing period.
fn check_rate(flag: &str, value: f64, max: f64, zero: Option<&str>) -> anyhow::Result<()> {
    if zero.is_some() && value == 0.0 {
        return Ok(());
    }
    anyhow::ensure!(
        value.is_finite() && (0.001..=max).contains(&value),
        "{flag} {value} is out of range: give a number per second from 0.001 to {max}{}",
        zero.map(|z| format!(", or 0 {z}")).unwrap_or_default()
    );
    Ok(())
}

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sockets > 0, "--sockets must be at least 1");
    check_rate("--rate", args.rate, MAX_RATE, None)?;
    check_rate(
        "--connect-rate",
        args.connect_rate,
        MAX_CONNECT_RATE,
        Some("to open as fast as --connect-concurrency allows"),
    )?;
    anyhow::ensure!(args.per_source > 0, "--per-source must be at least 1");
    anyhow::ensure!(args.per_worker > 0, "--per-worker must be at least 1");
    anyhow::ensure!(args.workers != Some(0), "--workers must be at least 1");
    anyhow::ensure!(
        args.connect_concurrency > 0,
        "--connect-concurrency must be at least 1"
    );
    if matches!(args.mode, Mode::Fanout | Mode::Spread) && args.nats.is_none() {
        anyhow::ensure!(
            args.publish_key.is_some(),
            "publishing through the router needs --publish-key (or DAISI_ROUTER_PUBLISH_API_KEY), or use --nats"
        );
    }
    Ok(())
}

fn setups(args: &BenchArgs, plan: &Plan, run: u32, edge: SocketAddr, host: &str) -> Vec<Setup> {
    let n = args.sockets;
    let workers = args
        .workers
        .unwrap_or_else(|| usize::try_from(n.div_ceil(args.per_worker)).unwrap_or(1))
        .max(1)
        .min(usize::try_from(n).unwrap_or(usize::MAX));
    let sources: Vec<Ipv4Addr> = (0..n.div_ceil(args.per_source).max(1))
        .map(|k| Ipv4Addr::from(u32::from(args.source_base).wrapping_add(k as u32)))
        .collect();
    let w = workers as u64;
    (0..w)
        .map(|i| {
            let first = n * i / w;
            let count = n * (i + 1) / w - first;
            Setup {
                edge_addr: edge,
                edge_host: host.to_owned(),
                api_key: args.api_key.clone(),
                user_key: args.key.clone(),
                plan: plan.clone(),
                run,
                first,
                count,
                sources: sources.clone(),
                per_source: args.per_source,
                concurrency: args.connect_concurrency.div_ceil(workers),
                rate: args.connect_rate / workers as f64,
                retries: args.connect_retries,
                handshake_timeout_ms: u64::try_from(args.handshake_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            }
        })
        .collect()
}

/// This run's command line for the report, keys and URL passwords hidden.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("daisi {}", crate::redact::command_line(&args))
}

/// Runs the load test `args` describes.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    validate(&args)?;
    let targets = targets(&args)?;
    let (edge, host) = edge_addr(&args.edge).await?;
    let run = match args.run_id {
        Some(id) => id,
        None => {
            let mut run = [0u8; 4];
            getrandom::fill(&mut run).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            u32::from_le_bytes(run)
        }
    };
    let plan = Plan {
        company: args.company.clone(),
        sockets: args.sockets,
        shape: if args.mode == Mode::Fanout {
            Shape::Fanout
        } else {
            Shape::Spread
        },
    };
    plan.company
        .parse::<daisi_domain::CompanyId>()
        .context("--company")?;
    let sink = match (&args.nats, args.mode) {
        (_, Mode::Idle | Mode::Storm) => None,
        (Some(url), _) => Some(Sink::jetstream(url).await?),
        (None, _) => Some(Sink::router(
            &args.router,
            args.publish_key.clone().unwrap_or_default(),
        )?),
    };
    let started_at = jiff::Timestamp::now().to_string();
    let edge_target = targets
        .iter()
        .find(|t| t.name == args.edge_process)
        .cloned();
    let edge_rss_before = edge_target
        .as_ref()
        .and_then(|t| procstat::read(t.pid))
        .map(|r| r.rss_kib);

    let setups = setups(&args, &plan, run, edge, &host);
    let workers_n = setups.len();
    let sources_n = setups.first().map_or(0, |s| s.sources.len());
    note(&format!(
        "opening {} sockets to {host} from {workers_n} worker(s) over {sources_n} source address(es)",
        args.sockets
    ));
    let mut workers = Workers::spawn(setups).await?;
    let progress = bar(args.sockets, "connecting");
    let opened = workers
        .collect(
            "their sockets",
            OPEN_DEADLINE,
            |r| match r {
                Reply::Opened(o) => Some(o),
                _ => None,
            },
            |w| {
                let t = w.totals();
                progress.set_position(t.ready + t.failed);
                progress.set_message(format!("{} failed", t.failed));
            },
        )
        .await?;
    progress.finish_and_clear();
    let connect = opening(&opened);
    note(&format!(
        "{} sockets ready, {} failed, in {:.2} s ({:.0}/s)",
        connect.ready, connect.failed, connect.seconds, connect.per_second
    ));
    if connect.ready == 0 {
        workers.quit().await;
        bail!(
            "no socket opened ({} failed); first errors: {} (check --edge, --api-key and --key)",
            connect.failed,
            connect.errors.join("; ")
        );
    }
    tokio::time::sleep(args.settle).await;

    let mut report = Report {
        mode: args.mode.name().to_owned(),
        label: args.label.clone(),
        run,
        started_at,
        settings: Settings {
            sockets: args.sockets,
            rate: args.rate,
            duration_seconds: args.duration.as_secs_f64(),
            warmup_seconds: args.warmup.as_secs_f64(),
            payload_bytes: args.payload_bytes,
            workers: workers_n,
            source_addresses: sources_n,
            connect_concurrency: args.connect_concurrency,
            connect_rate: args.connect_rate,
            sink: match &sink {
                Some(Sink::JetStream(_)) => "jetstream".to_owned(),
                Some(Sink::Router { .. }) => "router publish API".to_owned(),
                None => "none".to_owned(),
            },
            command: command_line(),
        },
        connect,
        storm: None,
        events: None,
        deliveries: None,
        latency: None,
        latency_from_schedule: None,
        closes: BTreeMap::new(),
        open_at_end: 0,
        window_seconds: 0.0,
        processes: Vec::new(),
        edge_rss_before_kib: edge_rss_before,
        rss_per_socket_kib: None,
        edge_cpu_us_per_socket_second: None,
        cpu_us_per_event: None,
        cpu_us_per_delivery: None,
    };

    let result = match args.mode {
        Mode::Idle => idle(&args, &targets, &mut report).await,
        Mode::Storm => storm(&mut workers, &targets, &mut report).await,
        Mode::Fanout | Mode::Spread => match &sink {
            Some(sink) => events(&args, &plan, sink, &mut workers, &targets, &mut report).await,
            None => Ok(()),
        },
    };
    let finished = match result {
        Ok(()) => final_tally(&mut workers, &mut report).await,
        Err(e) => Err(e),
    };
    workers.quit().await;
    finished?;

    finish_figures(&args, &mut report);
    if args.json {
        output::json(&serde_json::to_value(&report)?, false);
    } else {
        output::line(&report.markdown());
    }
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Holds the sockets while the processes are sampled.
async fn idle(args: &BenchArgs, targets: &[Target], report: &mut Report) -> anyhow::Result<()> {
    let mut window = Window::start(targets)?;
    let started = Instant::now();
    let hold = bar(args.hold.as_secs(), "holding");
    while started.elapsed() < args.hold {
        tokio::time::sleep(Duration::from_millis(500).min(args.hold)).await;
        window.sample();
        hold.set_position(started.elapsed().as_secs());
    }
    hold.finish_and_clear();
    report.window_seconds = started.elapsed().as_secs_f64();
    report.processes = window.finish();
    Ok(())
}

/// Every socket reconnects at once.
async fn storm(
    workers: &mut Workers,
    targets: &[Target],
    report: &mut Report,
) -> anyhow::Result<()> {
    let window = Window::start(targets)?;
    let started = Instant::now();
    note("reconnecting every socket at once");
    workers.send(&Command::Reconnect).await?;
    let total = report.connect.ready + report.connect.failed;
    let progress = bar(total, "storm");
    let reopened = workers
        .collect(
            "the storm",
            OPEN_DEADLINE,
            |r| match r {
                Reply::Reopened(o) => Some(o),
                _ => None,
            },
            |w| {
                let t = w.totals();
                progress.set_position(t.ready + t.failed);
            },
        )
        .await?;
    progress.finish_and_clear();
    report.window_seconds = started.elapsed().as_secs_f64();
    report.processes = window.finish();
    let storm = opening(&reopened);
    note(&format!(
        "{} of {} ready again in {:.2} s",
        storm.ready,
        storm.ready + storm.failed,
        storm.seconds
    ));
    report.storm = Some(storm);
    Ok(())
}

/// Warm-up, then the measured events; waits for their deliveries.
async fn events(
    args: &BenchArgs,
    plan: &Plan,
    sink: &Sink,
    workers: &mut Workers,
    targets: &[Target],
    report: &mut Report,
) -> anyhow::Result<()> {
    let schedule = |phase: Phase, seconds: f64| Schedule {
        run: report.run,
        phase,
        rate: args.rate,
        count: (args.rate * seconds).round().max(1.0) as u64,
        window: args.ack_window,
        prefix: args.prefix.clone(),
        payload_bytes: args.payload_bytes,
    };
    if !args.warmup.is_zero() {
        let warm = schedule(Phase::Warmup, args.warmup.as_secs_f64());
        let progress = bar(warm.count, "warm-up");
        let done = publisher::publish(sink, plan, &warm, |n| progress.set_position(n)).await;
        progress.finish_and_clear();
        if done.sent == 0 || done.failed.len() as u64 == done.sent {
            bail!("warm-up: no event could be published: {:?}", done.errors);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let measured = schedule(Phase::Measure, args.duration.as_secs_f64());
    let mut window = Window::start(targets)?;
    let started = Instant::now();
    note(&format!(
        "publishing {} events at {}/s to {} sockets ({:?})",
        measured.count, args.rate, args.sockets, plan.shape
    ));
    let progress = bar(measured.count, "publishing");
    let published: Published = {
        let publishing = publisher::publish(sink, plan, &measured, |n| progress.set_position(n));
        tokio::pin!(publishing);
        loop {
            tokio::select! {
                done = &mut publishing => break done,
                next = workers.next(Instant::now() + Duration::from_secs(1)) => {
                    next?;
                    progress.set_message(format!("{} delivered", workers.totals().arrived));
                    window.sample();
                }
            }
        }
    };
    progress.finish_and_clear();
    // The workers know which sockets got `ready`: they count what those are owed, and only
    // first arrivals of owed events (duplicates and misrouted events are no progress).
    workers
        .send(&Command::Sent {
            published: published.sent,
            excluded: published.failed.clone(),
        })
        .await?;
    let drain = bar(
        plan.expected_total(published.sent - published.failed.len() as u64),
        "delivering",
    );
    let deadline = Instant::now() + args.drain;
    loop {
        let t = workers.totals();
        if let Some(owed) = t.owed {
            drain.set_length(owed);
            drain.set_position(t.arrived.min(owed));
            if t.arrived >= owed {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        workers.next(deadline).await?;
        window.sample();
    }
    drain.finish_and_clear();
    report.window_seconds = started.elapsed().as_secs_f64();
    report.processes = window.finish();
    report.events = Some(published);
    Ok(())
}

/// Asks every worker for its tallies and merges them into the report.
async fn final_tally(workers: &mut Workers, report: &mut Report) -> anyhow::Result<()> {
    let (published, excluded) = report
        .events
        .as_ref()
        .map_or((0, Vec::new()), |e| (e.sent, e.failed.clone()));
    workers
        .send(&Command::Report {
            published,
            excluded,
        })
        .await?;
    let received: Vec<Box<Received>> = workers
        .collect(
            "their tallies",
            REPORT_DEADLINE,
            |r| match r {
                Reply::Received(r) => Some(r),
                _ => None,
            },
            |_| {},
        )
        .await?;
    let mut latency = Latency::default();
    let mut from_schedule = Latency::default();
    let mut d = Deliveries::default();
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    for r in &received {
        d.counts += r.counts;
        d.warmup += r.warmup;
        d.foreign += r.foreign;
        d.other_frames += r.other_frames;
        latency.add(&r.latency);
        from_schedule.add(&r.from_schedule);
        for (code, n) in &r.closes {
            *report.closes.entry(code.clone()).or_default() += n;
        }
        report.open_at_end += r.open;
        first = match (first, r.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(r.last_ns);
    }
    if let Some(events) = &report.events {
        let span = match (first, last) {
            (Some(f), Some(l)) if l > f => (l - f) as f64 / 1e9,
            _ => events.seconds,
        };
        d.per_second = d.counts.unique as f64 / span.max(events.seconds).max(1e-9);
        report.latency = Some(latency.summary());
        report.latency_from_schedule = Some(from_schedule.summary());
        report.deliveries = Some(d);
    }
    Ok(())
}

/// Per-event, per-delivery and per-socket figures from the process usage; none when a
/// process exited during the window (its CPU and memory stop at its last sample).
fn finish_figures(args: &BenchArgs, report: &mut Report) {
    if let Some(gone) = report.processes.iter().find(|p| p.exited) {
        note(&format!(
            "{} (pid {}) exited during the run: no per-event or per-socket figures",
            gone.name, gone.pid
        ));
        return;
    }
    let cpu: f64 = report.processes.iter().map(|p| p.cpu_seconds).sum();
    let edge = report
        .processes
        .iter()
        .find(|p| p.name == args.edge_process)
        .cloned();
    let open = report.open_at_end.max(1) as f64;
    if let (Some(edge), Some(before)) = (&edge, report.edge_rss_before_kib)
        && args.mode == Mode::Idle
    {
        report.rss_per_socket_kib = Some(edge.rss_end_kib.saturating_sub(before) as f64 / open);
        report.edge_cpu_us_per_socket_second =
            Some(edge.cpu_seconds * 1e6 / open / report.window_seconds.max(1e-9));
    }
    if report.processes.is_empty() {
        return;
    }
    if let Some(events) = &report.events {
        let sent = events.sent.saturating_sub(events.failed.len() as u64);
        if sent > 0 {
            report.cpu_us_per_event = Some(cpu * 1e6 / sent as f64);
        }
    }
    if let Some(d) = &report.deliveries
        && d.counts.unique > 0
    {
        report.cpu_us_per_delivery = Some(cpu * 1e6 / d.counts.unique as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_finite_positive_and_bounded() {
        for bad in [f64::INFINITY, f64::NAN, 0.0, -5.0, 1e300, MAX_RATE * 2.0] {
            let error = check_rate("--rate", bad, MAX_RATE, None).expect_err("refused");
            assert!(error.to_string().contains("--rate"), "{error}");
        }
        check_rate("--rate", 1000.0, MAX_RATE, None).expect("a rate");
        let zero = Some("for no pacing");
        check_rate("--connect-rate", 0.0, MAX_CONNECT_RATE, zero).expect("0 means unpaced");
        check_rate("--connect-rate", 500.0, MAX_CONNECT_RATE, zero).expect("a rate");
        for bad in [f64::INFINITY, f64::NAN, -1.0, 1e-12, 1e300] {
            let error =
                check_rate("--connect-rate", bad, MAX_CONNECT_RATE, zero).expect_err("refused");
            assert!(error.to_string().contains("--connect-rate"), "{error}");
        }
    }

    #[test]
    fn a_tls_edge_is_refused_with_a_reason() {
        let url = |s: &str| url::Url::parse(s).expect("a URL");
        check_edge(&url("http://127.0.0.1:8080")).expect("plain HTTP");
        check_edge(&url("ws://edge:8080")).expect("plain ws");
        for tls in ["https://edge.example", "wss://edge.example"] {
            let error = check_edge(&url(tls)).expect_err("refused");
            assert!(error.to_string().contains("no TLS"), "{error}");
        }
        assert!(check_edge(&url("ftp://edge")).is_err());
    }
}
