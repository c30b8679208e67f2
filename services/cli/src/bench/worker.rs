//! `daisi bench-worker`: a process holding a share of a load run's sockets (one process cannot
//! hold more than the open-file limit allows). It reads its [`Setup`] and then commands from
//! stdin, opens its sockets, records every stamped event they receive, and answers on stdout
//! (see [`super::protocol`]). Single-threaded: the driver starts several workers for
//! parallelism.

use super::connect::{self, Socket};
use super::latency::Latency;
use super::payload::{self, Phase};
use super::plan::Plan;
use super::protocol::{Command, Opened, Received, Reply, Setup};
use super::tally::{Counts, SocketTally};
use anyhow::Context;
use daisi_domain::token::UserClaims;
use daisi_runtime::CancellationToken;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// How long closing sockets may take before their tasks are aborted.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);
/// Distinct failure reasons reported per opening.
const MAX_ERRORS: usize = 5;

/// Nanoseconds since the Unix epoch, the clock the publisher stamps with.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Everything the socket tasks record into.
#[derive(Debug)]
struct State {
    plan: Plan,
    run: u32,
    first: u64,
    tallies: Vec<SocketTally>,
    latency: Latency,
    from_schedule: Latency,
    /// First arrivals of owed measured events (the drain's progress).
    arrived: u64,
    /// Set by `Sent`: which events are owed, and how many deliveries.
    owing: Option<Owing>,
    warmup: u64,
    foreign: u64,
    other_frames: u64,
    closes: BTreeMap<String, u64>,
    open: u64,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    // The current opening.
    ready: u64,
    failed: u64,
    retries: u64,
    time_to_ready: Latency,
    errors: Vec<String>,
}

/// The measured events once they are all out.
#[derive(Debug)]
struct Owing {
    /// Events published.
    published: u64,
    /// Of those, the ones whose publish failed (sorted).
    excluded: Vec<u64>,
    /// Deliveries the sockets that got `ready` are owed.
    owed: u64,
}

impl Owing {
    fn owes(&self, seq: u64) -> bool {
        seq < self.published && self.excluded.binary_search(&seq).is_err()
    }
}

type Shared = Arc<(Mutex<State>, Notify)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    /// Nothing received yet; `count` sockets from index `first`.
    fn new(plan: Plan, run: u32, first: u64, count: usize) -> Self {
        Self {
            plan,
            run,
            first,
            tallies: vec![SocketTally::default(); count],
            latency: Latency::default(),
            from_schedule: Latency::default(),
            arrived: 0,
            owing: None,
            warmup: 0,
            foreign: 0,
            other_frames: 0,
            closes: BTreeMap::new(),
            open: 0,
            first_ns: None,
            last_ns: None,
            ready: 0,
            failed: 0,
            retries: 0,
            time_to_ready: Latency::default(),
            errors: Vec::new(),
        }
    }

    fn on_text(&mut self, local: usize, text: &str, at_ns: u64) {
        let Some(stamp) = payload::find(text) else {
            self.other_frames += 1;
            return;
        };
        if stamp.run != self.run {
            self.foreign += 1;
            return;
        }
        if stamp.phase == Phase::Warmup {
            self.warmup += 1;
            return;
        }
        let index = self.first + local as u64;
        let first_arrival = self
            .tallies
            .get_mut(local)
            .is_some_and(|tally| tally.record(&self.plan, index, stamp.seq));
        if first_arrival && self.owing.as_ref().is_none_or(|o| o.owes(stamp.seq)) {
            self.arrived += 1;
        }
        self.latency.record(at_ns.saturating_sub(stamp.sent_ns));
        self.from_schedule
            .record(at_ns.saturating_sub(stamp.scheduled_ns));
        self.first_ns = Some(self.first_ns.map_or(at_ns, |f| f.min(at_ns)));
        self.last_ns = Some(self.last_ns.map_or(at_ns, |l| l.max(at_ns)));
    }

    /// Every socket's counts once `published` events went out, `excluded` of them failed.
    fn counts(&self, published: u64, excluded: &[u64]) -> Counts {
        let mut counts = Counts::default();
        for (local, tally) in self.tallies.iter().enumerate() {
            counts += tally.settle(&self.plan, self.first + local as u64, published, excluded);
        }
        counts
    }

    /// Every measured event is out: what is owed, and which arrivals count from now on.
    fn sent(&mut self, published: u64, excluded: Vec<u64>) {
        let counts = self.counts(published, &excluded);
        self.arrived = counts.unique;
        self.owing = Some(Owing {
            published,
            excluded,
            owed: counts.expected,
        });
    }

    fn report(&self, published: u64, excluded: &[u64]) -> Received {
        let counts = self.counts(published, excluded);
        Received {
            counts,
            latency: self.latency.buckets(),
            from_schedule: self.from_schedule.buckets(),
            warmup: self.warmup,
            foreign: self.foreign,
            other_frames: self.other_frames,
            closes: self.closes.clone(),
            open: self.open,
            first_ns: self.first_ns,
            last_ns: self.last_ns,
        }
    }
}

/// The socket URLs of this worker's share, tokens minted locally.
fn urls(setup: &Setup) -> anyhow::Result<Vec<String>> {
    let ring = crate::token::keyring(Some(&setup.user_key), "--key", "DAISI_EDGE_TOKEN_AES_KEY")?;
    let now = jiff::Timestamp::now();
    (setup.first..setup.first + setup.count)
        .map(|index| {
            let agent = Plan::agent_id(setup.plan.agent_of_socket(index));
            let claims = UserClaims::expiring_in(
                setup.plan.company.parse()?,
                agent.parse()?,
                Plan::user_id(index).parse()?,
                now,
                24 * 3600,
            )?;
            let token = ring.encode_user(&claims)?;
            let mut url = url::Url::parse(&format!(
                "ws://{}/ws/{}/{agent}",
                setup.edge_host, setup.plan.company
            ))?;
            url.query_pairs_mut().append_pair("token", &token);
            Ok(url.into())
        })
        .collect()
}

/// Receives on one socket until the edge closes it or `stop`.
async fn hold(mut ws: Socket, local: usize, shared: Shared, stop: CancellationToken) {
    let end = loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                break None;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let at = now_ns();
                    lock(&shared).on_text(local, text.as_str(), at);
                }
                Some(Ok(Message::Close(frame))) => {
                    break Some(frame.map_or(1005, |f| u16::from(f.code)).to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some("dropped".to_owned()),
            },
        }
    };
    let mut state = lock(&shared);
    state.open -= 1;
    if let Some(code) = end {
        *state.closes.entry(code).or_default() += 1;
    }
}

/// Opens every socket of the share (paced, bounded), each task then holding its socket.
async fn open_all(
    setup: &Setup,
    urls: &Arc<Vec<String>>,
    shared: &Shared,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Opened {
    {
        let mut s = lock(shared);
        s.ready = 0;
        s.failed = 0;
        s.retries = 0;
        s.time_to_ready = Latency::default();
        s.errors.clear();
    }
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(setup.concurrency.max(1)));
    let mut pace = (setup.rate > 0.0).then(|| {
        // The driver bounds the rate; a zero period would make `interval` panic.
        let period = Duration::try_from_secs_f64(1.0 / setup.rate)
            .unwrap_or(Duration::MAX)
            .max(Duration::from_micros(1));
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let timeout = Duration::from_millis(setup.handshake_timeout_ms);
    for local in 0..urls.len() {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let index = setup.first + local as u64;
        let per_source = setup.per_source.max(1);
        let source =
            setup.sources[usize::try_from(index / per_source).unwrap_or(0) % setup.sources.len()];
        let (urls, shared, stop) = (urls.clone(), shared.clone(), stop.clone());
        let (edge, api_key, retries) = (setup.edge_addr, setup.api_key.clone(), setup.retries);
        tasks.spawn(async move {
            let target = connect::Target {
                edge,
                url: &urls[local],
                api_key: &api_key,
                source: IpAddr::V4(source),
            };
            let (result, tries) = connect::open(&target, timeout, retries).await;
            drop(permit);
            let ws = {
                let mut s = lock(&shared);
                s.retries += u64::from(tries);
                match result {
                    Ok(ws) => {
                        s.ready += 1;
                        s.open += 1;
                        if let Some(tally) = s.tallies.get_mut(local) {
                            tally.mark_opened();
                        }
                        let waited =
                            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        s.time_to_ready.record(waited);
                        Some(ws)
                    }
                    Err(reason) => {
                        s.failed += 1;
                        if s.errors.len() < MAX_ERRORS && !s.errors.contains(&reason) {
                            s.errors.push(reason);
                        }
                        None
                    }
                }
            };
            shared.1.notify_waiters();
            if let Some(ws) = ws {
                hold(ws, local, shared, stop).await;
            }
        });
    }
    loop {
        let notified = shared.1.notified();
        {
            let s = lock(shared);
            if s.ready + s.failed >= setup.count {
                break;
            }
        }
        // Woken by each settled socket; the timer only guards a wake-up lost in between.
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
    let s = lock(shared);
    Opened {
        ready: s.ready,
        failed: s.failed,
        retries: s.retries,
        seconds: started.elapsed().as_secs_f64(),
        time_to_ready: s.time_to_ready.buckets(),
        errors: s.errors.clone(),
    }
}

/// Stops every socket task of a generation, waiting at most [`CLOSE_DEADLINE`].
async fn close_all(stop: &CancellationToken, tasks: &mut JoinSet<()>) {
    stop.cancel();
    let drained = tokio::time::timeout(CLOSE_DEADLINE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// Writes replies to stdout, one line each.
fn writer() -> (mpsc::Sender<Reply>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Reply>(64);
    let task = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(reply) = rx.recv().await {
            let Ok(mut line) = serde_json::to_string(&reply) else {
                continue;
            };
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// The worker process.
pub(crate) async fn run() -> anyhow::Result<ExitCode> {
    // Each socket is a descriptor: use all the hard limit allows.
    let _ = daisi_runtime::fd_limit::raise();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .context("reading the setup")?
        .context("no setup on stdin")?;
    let setup: Setup = serde_json::from_str(&first).context("the setup line")?;
    anyhow::ensure!(!setup.sources.is_empty(), "no source address");
    let urls = Arc::new(urls(&setup)?);
    let shared: Shared = Arc::new((
        Mutex::new(State::new(
            setup.plan.clone(),
            setup.run,
            setup.first,
            urls.len(),
        )),
        Notify::new(),
    ));
    let (out, writing) = writer();
    let progress = {
        let (out, shared) = (out.clone(), shared.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let reply = {
                    let s = lock(&shared);
                    Reply::Progress {
                        ready: s.ready,
                        failed: s.failed,
                        arrived: s.arrived,
                        owed: s.owing.as_ref().map(|o| o.owed),
                    }
                };
                if out.try_send(reply).is_err() && out.is_closed() {
                    return;
                }
            }
        })
    };

    let mut generation = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let opened = open_all(&setup, &urls, &shared, &generation, &mut tasks).await;
    let _ = out.send(Reply::Opened(opened)).await;
    while let Some(line) = lines.next_line().await.context("reading a command")? {
        match serde_json::from_str::<Command>(&line).context("a command line")? {
            Command::Reconnect => {
                close_all(&generation, &mut tasks).await;
                generation = CancellationToken::new();
                let opened = open_all(&setup, &urls, &shared, &generation, &mut tasks).await;
                let _ = out.send(Reply::Reopened(opened)).await;
            }
            Command::Sent {
                published,
                excluded,
            } => lock(&shared).sent(published, excluded),
            Command::Report {
                published,
                excluded,
            } => {
                let received = lock(&shared).report(published, &excluded);
                let _ = out.send(Reply::Received(Box::new(received))).await;
            }
            Command::Quit => break,
        }
    }
    close_all(&generation, &mut tasks).await;
    progress.abort();
    drop(out);
    let _ = writing.await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Shape;

    const RUN: u32 = 7;

    fn event(seq: u64) -> String {
        let stamp = payload::Stamp {
            run: RUN,
            phase: Phase::Measure,
            seq,
            scheduled_ns: 1,
            sent_ns: 1,
        };
        payload::render("c", "a0", &stamp, 0)
    }

    /// Sockets 0..4 of a spread run over 4 sockets; all but socket 3 got `ready`.
    fn state() -> State {
        let plan = Plan {
            company: "c".into(),
            sockets: 4,
            shape: Shape::Spread,
        };
        let mut state = State::new(plan, RUN, 0, 4);
        for tally in &mut state.tallies[..3] {
            tally.mark_opened();
        }
        state
    }

    #[test]
    fn progress_counts_first_arrivals_at_the_right_socket_only() {
        let mut s = state();
        // Socket 1 owes 1, 5, 9: 5 arrives twice, 2 (socket 2's) arrives there by mistake.
        for seq in [1, 5, 5, 2] {
            s.on_text(1, &event(seq), 10);
        }
        s.on_text(0, &event(0), 10);
        assert_eq!(
            s.arrived, 3,
            "duplicates and misrouted events are no progress"
        );
    }

    #[test]
    fn once_sent_only_owed_arrivals_count_and_never_ready_sockets_owe_nothing() {
        let mut s = state();
        s.on_text(0, &event(0), 10);
        s.on_text(0, &event(4), 10);
        // 12 published (3 per socket), seq 8 failed to publish but arrives anyway.
        s.sent(12, vec![8]);
        assert_eq!(s.owing.as_ref().map(|o| o.owed), Some(3 + 3 + 3 - 1));
        assert_eq!(s.arrived, 2);
        s.on_text(0, &event(8), 10);
        // Seq 16 was never published in this count.
        s.on_text(0, &event(16), 10);
        s.on_text(1, &event(1), 10);
        assert_eq!(s.arrived, 3);
        let counts = s.report(12, &[8]).counts;
        assert_eq!((counts.expected, counts.unique, counts.lost), (8, 3, 5));
        assert_eq!(
            (counts.never_opened_sockets, counts.owed_to_never_opened),
            (1, 3)
        );
    }
}
