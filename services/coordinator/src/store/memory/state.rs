//! The data of [`super::MemoryStore`] and the steps its operations share (liveness, route
//! sets, purge), all called with the store's lock held.

use crate::store::Route;
use crate::store::types::*;
use crate::store::{StoreError, StoreResult};
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Default)]
pub(super) struct State {
    /// Last fencing token handed out; one sequence for every key keeps them strictly increasing.
    pub(super) sequence: u64,
    /// Held sessions; ordered so listings can page by key.
    pub(super) sessions: BTreeMap<SessionKey, Session>,
    /// Selected chats kept after their session, until the instant stored with them.
    pub(super) selections: HashMap<SessionKey, (ChatId, Timestamp)>,
    /// Route -> pods registered for it (the routers' lookup direction).
    pub(super) routes: BTreeMap<Route, BTreeSet<PodId>>,
    /// Pod -> its routes (the purge and per-pod listing direction).
    pub(super) pod_routes: HashMap<PodId, BTreeSet<Route>>,
    /// Registered pods, including lapsed ones until the reaper purges them.
    pub(super) pods: BTreeMap<PodId, PodRecord>,
    /// Pod -> number of its current registration (a new one per instance and per return
    /// after a lapse); sessions carry the one that granted them.
    pub(super) registrations: HashMap<PodId, u64>,
    /// Last registration number handed out.
    pub(super) registration_sequence: u64,
    /// How long a chat selection outlives a session dropped because its holder died.
    pub(super) selection_retention: Duration,
    /// Pod -> its inbox: (sequence, kept until, command), oldest first, at most `INBOX_LIMIT`.
    inboxes: HashMap<PodId, VecDeque<(u64, Timestamp, KillCommand)>>,
    /// Last inbox sequence handed out.
    inbox_sequence: u64,
    /// Connections that were taken over or killed, remembered until the instant stored with
    /// them so that no renew or acquire brings them back (`StoreSettings::tombstone_ttl`).
    tombstones: HashMap<(SessionKey, ConnectionId), Tombstone>,
    /// The keys of `tombstones` in burial order, which is also expiry order (one lifetime for
    /// all), so expired ones are dropped from the front.
    burials: VecDeque<(Timestamp, SessionKey, ConnectionId)>,
}

/// Why a connection lost its session, kept for the tombstone lifetime.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tombstone {
    /// Taken over or killed by an operator.
    pub(super) reason: EndReason,
    /// Forgotten after this.
    until: Timestamp,
}

#[derive(Debug, Clone)]
pub(super) struct Session {
    /// The connection holding it.
    pub(super) holder: Holder,
    /// When the holder acquired it.
    pub(super) since: Timestamp,
    /// The user's selected chat.
    pub(super) chat: Option<ChatId>,
    /// The registration of the holder's pod that granted it: the session is valid exactly as
    /// long as that registration is current and within its lease (it has no lease of its own).
    pub(super) registration: u64,
}

pub(super) fn after(now: Timestamp, span: Duration) -> Timestamp {
    let span = SignedDuration::try_from(span).unwrap_or(SignedDuration::MAX);
    now.checked_add(span).unwrap_or(Timestamp::MAX)
}

impl State {
    pub(super) fn new(selection_retention: Duration) -> Self {
        Self {
            selection_retention,
            ..Self::default()
        }
    }

    pub(super) fn pod_live(&self, pod: &PodId, now: Timestamp) -> bool {
        self.pods
            .get(pod)
            .is_some_and(|p| p.lease_expires_at >= now)
    }

    pub(super) fn require_pod(&self, pod: &PodId, now: Timestamp) -> StoreResult<()> {
        if self.pod_live(pod, now) {
            Ok(())
        } else {
            Err(StoreError::UnknownPod(pod.clone()))
        }
    }

    /// Appends `command` to its pod's inbox until `until`, keeping the newest `INBOX_LIMIT`.
    pub(super) fn push_inbox(&mut self, command: KillCommand, until: Timestamp) {
        self.inbox_sequence += 1;
        let inbox = self.inboxes.entry(command.pod.clone()).or_default();
        inbox.push_back((self.inbox_sequence, until, command));
        while inbox.len() > INBOX_LIMIT {
            inbox.pop_front();
        }
    }

    /// The inbox of `pod` after dropping the entries up to `acked` and the expired ones.
    pub(super) fn inbox(&mut self, pod: &PodId, acked: u64, now: Timestamp) -> Vec<InboxEntry> {
        let Some(inbox) = self.inboxes.get_mut(pod) else {
            return Vec::new();
        };
        inbox.retain(|(sequence, until, _)| *sequence > acked && *until >= now);
        let entries = inbox
            .iter()
            .map(|(sequence, _, command)| InboxEntry {
                sequence: *sequence,
                command: command.clone(),
            })
            .collect();
        if inbox.is_empty() {
            self.inboxes.remove(pod);
        }
        entries
    }

    /// Whether the registration that granted `session` is its pod's current one, within its
    /// lease: the session of a lapsed or re-registered pod is vacant at once.
    pub(super) fn holder_live(&self, session: &Session, now: Timestamp) -> bool {
        self.pod_live(&session.holder.pod, now)
            && self.registrations.get(&session.holder.pod) == Some(&session.registration)
    }

    /// Starts a new registration of `pod` and answers its number.
    pub(super) fn register(&mut self, pod: &PodId) -> u64 {
        self.registration_sequence += 1;
        self.registrations
            .insert(pod.clone(), self.registration_sequence);
        self.registration_sequence
    }

    /// The session of `key` unless its holder died (dropped here, keeping its chat selection,
    /// as a purge would).
    pub(super) fn live(&mut self, key: &SessionKey, now: Timestamp) -> Option<&mut Session> {
        if self
            .sessions
            .get(key)
            .is_some_and(|s| !self.holder_live(s, now))
        {
            let retain_until = after(now, self.selection_retention);
            self.drop_session(key, retain_until);
        }
        self.sessions.get_mut(key)
    }

    /// The live tombstone of `connection` for `key`.
    pub(super) fn tombstone(
        &self,
        key: &SessionKey,
        connection: &ConnectionId,
        now: Timestamp,
    ) -> Option<Tombstone> {
        self.tombstones
            .get(&(key.clone(), connection.clone()))
            .filter(|t| t.until >= now)
            .copied()
    }

    /// Remembers until `until` that `connection` lost `key`; the first reason wins while it
    /// lives. Drops the expired tombstones first.
    pub(super) fn bury(
        &mut self,
        key: &SessionKey,
        connection: &ConnectionId,
        reason: EndReason,
        now: Timestamp,
        until: Timestamp,
    ) {
        while self.burials.front().is_some_and(|(t, _, _)| *t < now) {
            if let Some((t, k, c)) = self.burials.pop_front() {
                let id = (k, c);
                if self
                    .tombstones
                    .get(&id)
                    .is_some_and(|stone| stone.until == t)
                {
                    self.tombstones.remove(&id);
                }
            }
        }
        let id = (key.clone(), connection.clone());
        if self.tombstones.get(&id).is_some_and(|t| t.until >= now) {
            return;
        }
        self.tombstones.insert(id, Tombstone { reason, until });
        self.burials
            .push_back((until, key.clone(), connection.clone()));
    }

    pub(super) fn selection(&self, key: &SessionKey, now: Timestamp) -> Option<ChatId> {
        self.selections
            .get(key)
            .filter(|(_, until)| *until >= now)
            .map(|(chat, _)| chat.clone())
    }

    pub(super) fn add_route(&mut self, pod: &PodId, route: Route) {
        self.routes
            .entry(route.clone())
            .or_default()
            .insert(pod.clone());
        self.pod_routes
            .entry(pod.clone())
            .or_default()
            .insert(route);
    }

    pub(super) fn remove_route(&mut self, pod: &PodId, route: &Route) {
        if let Some(pods) = self.routes.get_mut(route) {
            pods.remove(pod);
            if pods.is_empty() {
                self.routes.remove(route);
            }
        }
        if let Some(routes) = self.pod_routes.get_mut(pod) {
            routes.remove(route);
        }
    }

    pub(super) fn drop_session(
        &mut self,
        key: &SessionKey,
        retain_until: Timestamp,
    ) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if let Some(chat) = &session.chat {
            self.selections
                .insert(key.clone(), (chat.clone(), retain_until));
        }
        Some(session)
    }

    pub(super) fn purge(&mut self, pod: &PodId, retain_until: Timestamp) -> Purged {
        let keys: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| &s.holder.pod == pod)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.drop_session(key, retain_until);
        }
        let routes = self.pod_routes.remove(pod).unwrap_or_default();
        for route in &routes {
            self.remove_route(pod, route);
        }
        self.pods.remove(pod);
        self.registrations.remove(pod);
        Purged {
            sessions: count(keys.len()),
            routes: count(routes.len()),
        }
    }

    /// What operators see of `session`; it lives until its pod's lease ends.
    pub(super) fn info(&self, key: &SessionKey, session: &Session) -> SessionInfo {
        let pod_lease_end = self.pods.get(&session.holder.pod);
        SessionInfo {
            key: key.clone(),
            holder: session.holder.clone(),
            since: session.since,
            lease_expires_at: pod_lease_end.map_or(session.since, |p| p.lease_expires_at),
            selected_chat: session.chat.clone(),
        }
    }
}

pub(super) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether `session` is `held`, held by `pod` (a pod acts only as itself).
pub(super) fn matches(session: &Session, pod: &PodId, held: &HeldSession) -> bool {
    &session.holder.pod == pod
        && session.holder.connection == held.connection
        && session.holder.fencing == held.fencing
}

/// Items after `token` (exclusive) in key order: at most `size`, and the next token.
pub(super) fn page_of<K: Ord + Clone + ToString, T>(
    items: impl Iterator<Item = (K, T)>,
    size: usize,
) -> Page<T> {
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for (key, item) in items {
        if out.len() == size {
            more = true;
            break;
        }
        last = Some(key);
        out.push(item);
    }
    Page {
        items: out,
        next: if more {
            last.map(|k| k.to_string())
        } else {
            None
        },
    }
}

pub(super) fn parse_token<T: std::str::FromStr>(page: &PageRequest) -> StoreResult<Option<T>> {
    page.token
        .as_deref()
        .map(|t| t.parse().map_err(|_| StoreError::BadPageToken))
        .transpose()
}
