//! The cases of the store contract, generic over the store.

use super::{Factory, relaxed};
use daisi_coordinator::store::*;
use daisi_domain::coordination::FencingToken;
use daisi_domain::{ChatId, ConnectionId, PodId, SessionKey};
use std::collections::HashSet;
use std::time::Duration;

fn pod(name: &str) -> PodId {
    name.parse().unwrap()
}

fn conn(name: &str) -> ConnectionId {
    name.parse().unwrap()
}

fn user(u: &str) -> SessionKey {
    format!("u:c1:a1:{u}").parse().unwrap()
}

fn chat(name: &str) -> ChatId {
    name.parse().unwrap()
}

async fn register<S: SessionStore>(store: &S, name: &str) -> PodId {
    let id = pod(name);
    let outcome = store
        .heartbeat(&PodHeartbeat {
            pod: id.clone(),
            instance: format!("{name}-i1"),
            delivery_address: format!("http://{name}:50061"),
            load: None,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, HeartbeatOutcome::Registered { .. }));
    id
}

async fn take<S: SessionStore>(store: &S, key: &SessionKey, pod: &PodId, c: &str) -> Grant {
    take_with(store, key, pod, c, Vec::new()).await
}

async fn take_with<S: SessionStore>(
    store: &S,
    key: &SessionKey,
    pod: &PodId,
    c: &str,
    routes: Vec<Route>,
) -> Grant {
    match store
        .acquire(AcquireRequest {
            key: key.clone(),
            pod: pod.clone(),
            connection: conn(c),
            mode: AcquireMode::Takeover,
            routes,
        })
        .await
        .unwrap()
    {
        AcquireOutcome::Granted(grant) => grant,
        other => panic!("takeover not granted: {other:?}"),
    }
}

fn held(key: &SessionKey, c: &str, grant: &Grant) -> HeldSession {
    HeldSession {
        key: key.clone(),
        connection: conn(c),
        fencing: grant.fencing,
    }
}

async fn next_kill(stream: &mut CommandStream) -> KillCommand {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a kill command within 5 s")
        .expect("the stream is open")
}

pub(crate) async fn takeover_kills_the_previous_holder_with_increasing_tokens(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let mut commands = store.watch_commands(&p1).await.unwrap();
    let key = user("u1");
    let first = take(&store, &key, &p1, "c1").await;
    assert_eq!(first.previous, None);
    let second = take(&store, &key, &p2, "c2").await;
    assert!(second.fencing > first.fencing);
    assert_eq!(
        second.previous,
        Some(Holder {
            pod: p1.clone(),
            connection: conn("c1"),
            fencing: first.fencing,
        })
    );
    let kill = next_kill(&mut commands).await;
    assert_eq!(
        (
            kill.pod,
            kill.key,
            kill.connection,
            kill.fencing,
            kill.reason
        ),
        (
            p1,
            key.clone(),
            conn("c1"),
            first.fencing,
            EndReason::TakenOver
        )
    );
    // Same pod takeover: the kill goes to the same pod.
    let third = take(&store, &key, &p2, "c3").await;
    assert!(third.fencing > second.fencing);
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(session.holder.connection, conn("c3"));
    assert_eq!(session.holder.fencing, third.fencing);
}

pub(crate) async fn same_connection_acquires_idempotently(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let first = take(&store, &key, &p, "c1").await;
    let again = take(&store, &key, &p, "c1").await;
    assert_eq!(again.fencing, first.fencing);
    assert_eq!(again.previous, None);
}

pub(crate) async fn if_vacant_refuses_a_held_session(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let request = |c: &str| AcquireRequest {
        key: key.clone(),
        pod: p.clone(),
        connection: conn(c),
        mode: AcquireMode::IfVacant,
        routes: vec![Route::Agent {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        }],
    };
    let AcquireOutcome::Granted(first) = store.acquire(request("c1")).await.unwrap() else {
        panic!("a vacant session is granted");
    };
    // The holder itself may restore its own grant.
    let AcquireOutcome::Granted(own) = store.acquire(request("c1")).await.unwrap() else {
        panic!("the holder gets its grant back");
    };
    assert_eq!(own.fencing, first.fencing);
    match store.acquire(request("c2")).await.unwrap() {
        AcquireOutcome::Refused(holder) => {
            assert_eq!(holder.connection, conn("c1"));
            assert_eq!(holder.fencing, first.fencing);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub(crate) async fn calls_naming_an_unknown_pod_are_refused(f: &impl Factory) {
    let store = f.store(relaxed());
    let ghost = pod("ghost");
    let key = user("u1");
    let request = AcquireRequest {
        key: key.clone(),
        pod: ghost.clone(),
        connection: conn("c1"),
        mode: AcquireMode::Takeover,
        routes: Vec::new(),
    };
    assert_eq!(
        store.acquire(request).await,
        Err(StoreError::UnknownPod(ghost.clone()))
    );
    let session = HeldSession {
        key: key.clone(),
        connection: conn("c1"),
        fencing: FencingToken(1),
    };
    assert_eq!(
        store.renew(&ghost, std::slice::from_ref(&session)).await,
        Err(StoreError::UnknownPod(ghost.clone()))
    );
    assert_eq!(
        store.release(&ghost, std::slice::from_ref(&session)).await,
        Err(StoreError::UnknownPod(ghost.clone()))
    );
    assert_eq!(
        store.select_chat(&ghost, &session, &chat("ch")).await,
        Err(StoreError::UnknownPod(ghost.clone()))
    );
    assert_eq!(
        store.register_routes(&ghost, &[]).await,
        Err(StoreError::UnknownPod(ghost.clone()))
    );
    // Removals and deregistration of unknown pods are harmless no-ops.
    assert_eq!(store.unregister_routes(&ghost, &[]).await, Ok(()));
    assert_eq!(store.deregister(&ghost, "i").await, Ok(Purged::default()));
}

pub(crate) async fn renew_after_takeover_reports_the_session_lost(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let (k1, k2) = (user("u1"), user("u2"));
    let g1 = take(&store, &k1, &p1, "c1").await;
    let g2 = take(&store, &k2, &p1, "c2").await;
    let mine = vec![held(&k1, "c1", &g1), held(&k2, "c2", &g2)];
    assert_eq!(store.renew(&p1, &mine).await.unwrap(), Vec::new());

    let newer = take(&store, &k1, &p2, "c9").await;
    let never = HeldSession {
        key: user("u3"),
        connection: conn("c3"),
        fencing: FencingToken(1),
    };
    let mut batch = mine.clone();
    batch.push(never.clone());
    let lost = store.renew(&p1, &batch).await.unwrap();
    assert_eq!(
        lost,
        vec![
            LostSession {
                session: mine[0].clone(),
                reason: EndReason::TakenOver,
                current: Some(Holder {
                    pod: p2,
                    connection: conn("c9"),
                    fencing: newer.fencing,
                }),
            },
            LostSession {
                session: never,
                reason: EndReason::Expired,
                current: None,
            },
        ]
    );
}

pub(crate) async fn release_after_takeover_leaves_the_new_holder(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let (k1, k2) = (user("u1"), user("u2"));
    let old = take(&store, &k1, &p1, "c1").await;
    let other = take(&store, &k2, &p1, "c2").await;
    let new = take(&store, &k1, &p2, "c9").await;

    let released = store
        .release(&p1, &[held(&k1, "c1", &old), held(&k2, "c2", &other)])
        .await
        .unwrap();
    assert_eq!(released.count, 1);
    assert_eq!(released.not_held, vec![held(&k1, "c1", &old)]);
    let session = store.get_session(&k1).await.unwrap().unwrap();
    assert_eq!(session.holder.connection, conn("c9"));
    assert_eq!(session.holder.fencing, new.fencing);
    assert_eq!(store.get_session(&k2).await.unwrap(), None);
    // A stale token of the right connection does not release either.
    let stale = HeldSession {
        fencing: old.fencing,
        ..held(&k1, "c9", &new)
    };
    assert_eq!(store.release(&p2, &[stale]).await.unwrap().count, 0);
    assert!(store.get_session(&k1).await.unwrap().is_some());
}

pub(crate) async fn selected_chat_is_restored_on_the_next_acquire(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let key = user("u1");
    let g1 = take(&store, &key, &p1, "c1").await;
    assert_eq!(g1.selected_chat, None);
    assert!(
        store
            .select_chat(&p1, &held(&key, "c1", &g1), &chat("ch7"))
            .await
            .unwrap()
    );
    let query = RouteQuery::Chat {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
        chat: chat("ch7"),
    };
    let lookup = store
        .lookup_routes(std::slice::from_ref(&query))
        .await
        .unwrap();
    assert_eq!(lookup.results, vec![vec![p1.clone()]]);

    // Takeover on another pod: restored, and the chat route now covers that pod too.
    let g2 = take(&store, &key, &p2, "c2").await;
    assert_eq!(g2.selected_chat, Some(chat("ch7")));
    let lookup = store
        .lookup_routes(std::slice::from_ref(&query))
        .await
        .unwrap();
    assert_eq!(
        lookup.results[0].iter().collect::<HashSet<_>>(),
        HashSet::from([&p1, &p2])
    );
    // The old connection can no longer select.
    assert!(
        !store
            .select_chat(&p1, &held(&key, "c1", &g1), &chat("x"))
            .await
            .unwrap()
    );

    // Released: the selection survives the session.
    store.release(&p2, &[held(&key, "c2", &g2)]).await.unwrap();
    let g3 = take(&store, &key, &p1, "c3").await;
    assert_eq!(g3.selected_chat, Some(chat("ch7")));
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(session.selected_chat, Some(chat("ch7")));
}

pub(crate) async fn admin_sessions_have_their_own_key_space(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let admin: SessionKey = "a:u1".parse().unwrap();
    let user_key = user("u1");
    let ga = take(&store, &admin, &p, "c1").await;
    let gu = take(&store, &user_key, &p, "c2").await;
    assert_eq!(gu.previous, None, "a user never takes over an admin");
    assert!(
        !store
            .select_chat(&p, &held(&admin, "c1", &ga), &chat("ch"))
            .await
            .unwrap()
    );
    let admins = store
        .list_sessions(
            &SessionFilter::Admins,
            &PageRequest {
                size: 10,
                token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(admins.items.len(), 1);
    assert_eq!(admins.items[0].key, admin);
}

async fn beat<S: SessionStore>(store: &S, name: &str) -> HeartbeatOutcome {
    store
        .heartbeat(&PodHeartbeat {
            pod: pod(name),
            instance: format!("{name}-i1"),
            delivery_address: format!("http://{name}:50061"),
            load: None,
        })
        .await
        .unwrap()
}

/// Sessions have no lease of their own: a pod that heartbeats keeps every session it holds
/// for many pod leases without a single renew, and each is reported to live until the pod's
/// lease ends. Once the heartbeats stop, every one is vacant as soon as the pod's lease runs
/// out (no reaper ran): nothing lists it, an audit of the pod is refused, and when the pod
/// returns (a new registration) the audit reports them expired and they go to the next
/// acquirer without a kill, with a greater token.
pub(crate) async fn a_session_lives_as_long_as_its_pod_heartbeats_and_no_longer(f: &impl Factory) {
    let lease = Duration::from_millis(800);
    let (a, b) = f.replicas(StoreSettings {
        pod_lease: lease,
        ..relaxed()
    });
    let p = register(&a, "edge-1").await;
    let (k1, k2) = (user("u1"), user("u2"));
    let g1 = take(&a, &k1, &p, "c1").await;
    let g2 = take(&a, &k2, &p, "c2").await;
    let mine = [held(&k1, "c1", &g1), held(&k2, "c2", &g2)];
    // Four pod leases of heartbeats, no renew.
    let until = tokio::time::Instant::now() + lease * 4;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let beat = beat(&b, "edge-1").await;
        assert!(matches!(beat, HeartbeatOutcome::Renewed { .. }), "{beat:?}");
    }
    for key in [&k1, &k2] {
        let session = b
            .get_session(key)
            .await
            .unwrap()
            .expect("held while the pod lives");
        assert_eq!(session.holder.pod, p);
        let pod_record = b.resolve_pods(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(
            Some(session.lease_expires_at),
            pod_record.pods.first().map(|r| r.lease_expires_at),
            "a session lives until its pod's lease ends"
        );
    }
    assert_eq!(
        a.renew(&p, &mine).await.unwrap(),
        vec![],
        "the audit finds both held"
    );
    let other = register(&b, "edge-2").await;
    match b.acquire(if_vacant(&k1, &other, "c9")).await.unwrap() {
        AcquireOutcome::Refused(holder) => assert_eq!(holder.connection, conn("c1")),
        refused => panic!("held by edge-1: {refused:?}"),
    }

    // The heartbeats stop: vacant once the pod's lease is over, before any reaper.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(b.get_session(&k1).await.unwrap(), None);
    assert!(matches!(
        a.renew(&p, &mine).await,
        Err(StoreError::UnknownPod(_))
    ));
    // The pod returns as a new registration: its old grants are gone.
    assert!(matches!(
        beat(&a, "edge-1").await,
        HeartbeatOutcome::Registered { .. }
    ));
    let lost = a.renew(&p, &mine).await.unwrap();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(
        lost.iter()
            .all(|l| l.reason == EndReason::Expired && l.current.is_none())
    );
    let mut kills = a.watch_commands(&p).await.unwrap();
    beat(&b, "edge-2").await;
    let g3 = match b.acquire(if_vacant(&k2, &other, "c3")).await.unwrap() {
        AcquireOutcome::Granted(grant) => grant,
        refused => panic!("vacant: {refused:?}"),
    };
    assert_eq!(g3.previous, None);
    assert!(g3.fencing > g2.fencing);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), kills.next())
            .await
            .is_err(),
        "nobody is killed for a vacant session"
    );
}

/// The selected chat outlives a session that lived longer than the selection retention with
/// no renew (sessions no longer refresh it): the end of the session keeps it.
pub(crate) async fn a_selection_outlives_a_session_longer_than_the_retention(f: &impl Factory) {
    let store = f.store(StoreSettings {
        selection_retention: Duration::from_millis(300),
        ..relaxed()
    });
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let g1 = take(&store, &key, &p, "c1").await;
    assert!(
        store
            .select_chat(&p, &held(&key, "c1", &g1), &chat("x"))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.release(&p, &[held(&key, "c1", &g1)]).await.unwrap();
    let g2 = take(&store, &key, &p, "c2").await;
    assert_eq!(g2.selected_chat, Some(chat("x")));
}

pub(crate) async fn routes_are_registered_looked_up_and_unregistered(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let agent = Route::Agent {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
    };
    let any_admin = Route::Admin {
        company: None,
        agent: None,
    };
    let company_admin = Route::Admin {
        company: Some("c1".parse().unwrap()),
        agent: None,
    };
    store
        .register_routes(&p1, &[agent.clone(), any_admin.clone()])
        .await
        .unwrap();
    store
        .register_routes(&p1, std::slice::from_ref(&agent))
        .await
        .unwrap();
    store
        .register_routes(&p2, &[agent.clone(), company_admin.clone()])
        .await
        .unwrap();

    let queries = [
        RouteQuery::Agent {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        },
        RouteQuery::Admins {
            company: "c2".parse().unwrap(),
            agent: "a1".parse().unwrap(),
        },
        RouteQuery::Admins {
            company: "c1".parse().unwrap(),
            agent: "a9".parse().unwrap(),
        },
        RouteQuery::Chat {
            company: "c1".parse().unwrap(),
            agent: "a1".parse().unwrap(),
            chat: chat("none"),
        },
    ];
    let lookup = store.lookup_routes(&queries).await.unwrap();
    let sets: Vec<HashSet<PodId>> = lookup
        .results
        .iter()
        .map(|pods| pods.iter().cloned().collect())
        .collect();
    assert_eq!(sets[0], HashSet::from([p1.clone(), p2.clone()]));
    assert_eq!(sets[1], HashSet::from([p1.clone()]));
    assert_eq!(sets[2], HashSet::from([p1.clone(), p2.clone()]));
    assert!(sets[3].is_empty());
    let mut named: Vec<String> = lookup.pods.iter().map(|p| p.pod.to_string()).collect();
    named.sort();
    assert_eq!(named, ["edge-1", "edge-2"]);
    assert_eq!(
        lookup.pods[0].delivery_address,
        format!("http://{}:50061", lookup.pods[0].pod)
    );

    let by_pod = store
        .list_routes(
            &RouteSelector::Pod(p1.clone()),
            &PageRequest {
                size: 100,
                token: None,
            },
        )
        .await
        .unwrap();
    let routes: HashSet<Route> = by_pod.items.into_iter().map(|e| e.route).collect();
    assert_eq!(routes, HashSet::from([agent.clone(), any_admin.clone()]));

    store
        .unregister_routes(&p1, std::slice::from_ref(&agent))
        .await
        .unwrap();
    let lookup = store.lookup_routes(&queries[..1]).await.unwrap();
    assert_eq!(lookup.results, vec![vec![p2.clone()]]);
    let by_route = store
        .list_routes(
            &RouteSelector::Route(agent),
            &PageRequest {
                size: 100,
                token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_route.items.len(), 1);
    assert_eq!(by_route.items[0].pod, p2);
}

pub(crate) async fn a_new_instance_starts_empty(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let agent = Route::Agent {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
    };
    take_with(&store, &key, &p, "c1", vec![agent.clone()]).await;
    let same = PodHeartbeat {
        pod: p.clone(),
        instance: "edge-1-i1".to_owned(),
        delivery_address: "http://edge-1:50061".to_owned(),
        load: Some(PodLoad {
            user_sockets: 1,
            admin_sockets: 0,
        }),
    };
    let renewed = store.heartbeat(&same).await.unwrap();
    let HeartbeatOutcome::Renewed {
        registration: before,
    } = renewed
    else {
        panic!("{renewed:?}");
    };
    assert_ne!(before, 0, "the registration is reported");
    let restarted = PodHeartbeat {
        instance: "edge-1-i2".to_owned(),
        ..same
    };
    let registered = store.heartbeat(&restarted).await.unwrap();
    let HeartbeatOutcome::Registered {
        purged,
        registration: after,
    } = registered
    else {
        panic!("{registered:?}");
    };
    assert_eq!(
        purged,
        Purged {
            sessions: 1,
            routes: 1,
        }
    );
    // A new registration number: an edge that misses this answer sees the change in the
    // next renewal's.
    assert_ne!(after, before);
    assert_eq!(
        store.heartbeat(&restarted).await.unwrap(),
        HeartbeatOutcome::Renewed {
            registration: after
        }
    );
    assert_eq!(store.get_session(&key).await.unwrap(), None);
    let resolved = store.resolve_pods(std::slice::from_ref(&p)).await.unwrap();
    assert_eq!(resolved.pods[0].instance, "edge-1-i2");
    assert_eq!(
        resolved.pods[0].load,
        Some(PodLoad {
            user_sockets: 1,
            admin_sockets: 0,
        })
    );
}

pub(crate) async fn deregister_removes_only_the_current_instance(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    take(&store, &key, &p, "c1").await;
    assert_eq!(
        store.deregister(&p, "old-instance").await.unwrap(),
        Purged::default()
    );
    assert!(store.get_session(&key).await.unwrap().is_some());
    let purged = store.deregister(&p, "edge-1-i1").await.unwrap();
    assert_eq!(purged.sessions, 1);
    assert_eq!(store.get_session(&key).await.unwrap(), None);
    let resolved = store
        .resolve_pods(&[p.clone(), pod("never")])
        .await
        .unwrap();
    assert!(resolved.pods.is_empty());
    assert_eq!(resolved.unknown, vec![p, pod("never")]);
}

pub(crate) async fn expired_pods_are_purged_once_by_concurrent_reapers(f: &impl Factory) {
    let settings = StoreSettings {
        pod_lease: Duration::from_millis(300),
        ..relaxed()
    };
    let (a, b) = f.replicas(settings);
    let p = register(&a, "edge-1").await;
    let key = user("u1");
    let agent = Route::Agent {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
    };
    take_with(&a, &key, &p, "c1", vec![agent]).await;
    assert!(
        a.reap_expired_pods().await.unwrap().is_empty(),
        "not yet expired"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Lapsed pods are gone for readers even before a reaper ran.
    let resolved = b.resolve_pods(std::slice::from_ref(&p)).await.unwrap();
    assert_eq!(resolved.unknown, vec![p.clone()]);
    let query = RouteQuery::Agent {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
    };
    assert_eq!(
        b.lookup_routes(std::slice::from_ref(&query))
            .await
            .unwrap()
            .results,
        vec![vec![]]
    );

    let (ra, rb) = tokio::join!(a.reap_expired_pods(), b.reap_expired_pods());
    let mut purged = ra.unwrap();
    purged.extend(rb.unwrap());
    assert_eq!(
        purged,
        vec![(
            p.clone(),
            Purged {
                sessions: 1,
                routes: 1,
            }
        )]
    );
    assert_eq!(a.get_session(&key).await.unwrap(), None);
    let by_pod = a
        .list_routes(
            &RouteSelector::Pod(p),
            &PageRequest {
                size: 10,
                token: None,
            },
        )
        .await
        .unwrap();
    assert!(by_pod.items.is_empty());
}

pub(crate) async fn sessions_are_listed_page_by_page(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let mut expected_agent = HashSet::new();
    for i in 0..25 {
        let agent = if i % 2 == 0 { "a1" } else { "a2" };
        let key: SessionKey = format!("u:c1:{agent}:u{i}").parse().unwrap();
        take(&store, &key, &p, &format!("c{i}")).await;
        if agent == "a1" {
            expected_agent.insert(key);
        }
    }
    take(&store, &"u:c2:a1:other".parse().unwrap(), &p, "cx").await;

    let collect = |filter: SessionFilter| {
        let store = store.clone();
        async move {
            let mut seen = HashSet::new();
            let mut token = None;
            for _ in 0..100 {
                let page = store
                    .list_sessions(&filter, &PageRequest { size: 4, token })
                    .await
                    .unwrap();
                assert!(page.items.len() <= 4 * 10, "pages stay near their size");
                seen.extend(page.items.into_iter().map(|s| s.key));
                match page.next {
                    Some(next) => token = Some(next),
                    None => return seen,
                }
            }
            panic!("the listing never ended");
        }
    };
    let company = collect(SessionFilter::Company("c1".parse().unwrap())).await;
    assert_eq!(company.len(), 25);
    let agent = collect(SessionFilter::Agent(
        "c1".parse().unwrap(),
        "a1".parse().unwrap(),
    ))
    .await;
    assert_eq!(agent, expected_agent);
    let bad = store
        .list_sessions(
            &SessionFilter::Admins,
            &PageRequest {
                size: 4,
                token: Some("not a token".to_owned()),
            },
        )
        .await;
    assert_eq!(bad, Err(StoreError::BadPageToken));
}

pub(crate) async fn kill_session_deletes_and_notifies_the_holder(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let mut commands = store.watch_commands(&p).await.unwrap();
    let key = user("u1");
    let grant = take(&store, &key, &p, "c1").await;
    let missed = store
        .kill_session(&key, Some(&conn("other")), "wrong connection")
        .await;
    assert_eq!(missed, Ok(None));
    let killed = store
        .kill_session(&key, None, "abuse\nticket 42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(killed.holder.connection, conn("c1"));
    assert_eq!(killed.holder.fencing, grant.fencing);
    let kill = next_kill(&mut commands).await;
    assert_eq!(kill.reason, EndReason::KilledByAdmin);
    assert_eq!(kill.message, "abuse\nticket 42");
    assert_eq!(kill.connection, conn("c1"));
    assert_eq!(store.get_session(&key).await.unwrap(), None);
    assert_eq!(store.kill_session(&key, None, "again").await, Ok(None));
}

pub(crate) async fn kills_reach_watchers_of_another_replica(f: &impl Factory) {
    let (a, b) = f.replicas(relaxed());
    let p = register(&a, "edge-1").await;
    let mut on_b = b.watch_commands(&p).await.unwrap();
    let key = user("u1");
    let first = take(&a, &key, &p, "c1").await;
    take(&a, &key, &p, "c2").await;
    let kill = next_kill(&mut on_b).await;
    assert_eq!((kill.connection, kill.fencing), (conn("c1"), first.fencing));
}

pub(crate) async fn concurrent_acquires_end_with_one_holder(f: &impl Factory) {
    let (a, b) = f.replicas(relaxed());
    let p = register(&a, "edge-1").await;
    let mut commands = a.watch_commands(&p).await.unwrap();
    let key = user("u1");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (key, p) = (key.clone(), p.clone());
            tokio::spawn(async move { (i, take(&store, &key, &p, &format!("c{i}")).await) })
        })
        .collect();
    let mut tokens = HashSet::new();
    for task in tasks {
        let (_, grant) = task.await.unwrap();
        assert!(tokens.insert(grant.fencing), "tokens are unique");
    }
    let holder = a.get_session(&key).await.unwrap().unwrap().holder;
    assert_eq!(
        Some(&holder.fencing),
        tokens.iter().max(),
        "the newest grant holds"
    );
    let mut killed = HashSet::new();
    for _ in 0..49 {
        let kill = next_kill(&mut commands).await;
        assert!(killed.insert(kill.connection), "one kill per connection");
    }
    assert!(!killed.contains(&holder.connection));
}

pub(crate) async fn large_batches_are_handled_in_one_call(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let mut sessions = Vec::new();
    for i in 0..40 {
        let key = user(&format!("u{i}"));
        let grant = take(&store, &key, &p, &format!("c{i}")).await;
        sessions.push(held(&key, &format!("c{i}"), &grant));
    }
    take(&store, &sessions[33].key, &p, "late").await;
    let lost = store.renew(&p, &sessions).await.unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].session, sessions[33]);
    let released = store.release(&p, &sessions).await.unwrap();
    assert_eq!(released.count, 39);
    assert_eq!(released.not_held, vec![sessions[33].clone()]);
}

fn if_vacant(key: &SessionKey, pod: &PodId, c: &str) -> AcquireRequest {
    AcquireRequest {
        key: key.clone(),
        pod: pod.clone(),
        connection: conn(c),
        mode: AcquireMode::IfVacant,
        routes: Vec::new(),
    }
}

fn takeover(key: &SessionKey, pod: &PodId, c: &str) -> AcquireRequest {
    AcquireRequest {
        mode: AcquireMode::Takeover,
        ..if_vacant(key, pod, c)
    }
}

async fn renew_one<S: SessionStore>(store: &S, pod: &PodId, session: &HeldSession) -> LostSession {
    let mut lost = store
        .renew(pod, std::slice::from_ref(session))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1, "{session:?} is reported lost");
    lost.remove(0)
}

pub(crate) async fn a_killed_connection_is_told_and_never_reacquires(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let grant = take(&store, &key, &p, "c1").await;
    let mine = held(&key, "c1", &grant);
    // Nobody watches the pod's commands: the kill command is lost.
    store
        .kill_session(&key, None, "abuse")
        .await
        .unwrap()
        .expect("c1 held the session");
    for _ in 0..2 {
        let lost = renew_one(&store, &p, &mine).await;
        assert_eq!(
            (lost.reason, lost.current),
            (EndReason::KilledByAdmin, None)
        );
        // Neither the edge's re-acquire of a vacant session nor a retried takeover undoes it.
        for request in [if_vacant(&key, &p, "c1"), takeover(&key, &p, "c1")] {
            assert_eq!(
                store.acquire(request).await.unwrap(),
                AcquireOutcome::Ended {
                    reason: EndReason::KilledByAdmin,
                    current: None,
                }
            );
        }
        assert_eq!(store.get_session(&key).await.unwrap(), None);
    }
    // The user may connect again at once; the killed connection stays killed.
    let next = take(&store, &key, &p, "c2").await;
    assert_eq!(next.previous, None);
    let lost = renew_one(&store, &p, &mine).await;
    assert_eq!(lost.reason, EndReason::KilledByAdmin);
    assert_eq!(
        lost.current.map(|h| h.connection),
        Some(conn("c2")),
        "the current holder is reported"
    );
    assert_eq!(
        store.renew(&p, &[held(&key, "c2", &next)]).await.unwrap(),
        vec![]
    );
}

pub(crate) async fn a_takeover_whose_kill_was_lost_is_told_on_the_next_renew(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let key = user("u1");
    let old = take(&store, &key, &p1, "c1").await;
    let new = take(&store, &key, &p2, "c2").await;
    assert!(new.previous.is_some());
    // The kill command for c1 is never delivered, and the new holder leaves again.
    let released = store.release(&p2, &[held(&key, "c2", &new)]).await.unwrap();
    assert_eq!(released.count, 1);
    let stale = held(&key, "c1", &old);
    let lost = renew_one(&store, &p1, &stale).await;
    assert_eq!(
        (lost.reason, lost.current),
        (EndReason::TakenOver, None),
        "taken over, not expired, although the key is vacant"
    );
    assert_eq!(
        store.acquire(if_vacant(&key, &p1, "c1")).await.unwrap(),
        AcquireOutcome::Ended {
            reason: EndReason::TakenOver,
            current: None,
        },
        "the edge's re-acquire of a lapsed session does not bring it back"
    );
    assert_eq!(store.get_session(&key).await.unwrap(), None);
    assert_eq!(
        renew_one(&store, &p1, &stale).await.reason,
        EndReason::TakenOver
    );
}

pub(crate) async fn select_chat_is_idempotent_and_reasserts_the_route(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let grant = take(&store, &key, &p, "c1").await;
    let mine = held(&key, "c1", &grant);
    let route = Route::Chat {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
        chat: chat("ch7"),
    };
    let query = RouteQuery::Chat {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
        chat: chat("ch7"),
    };
    assert!(store.select_chat(&p, &mine, &chat("ch7")).await.unwrap());
    // The edge unregisters the route (it timed out waiting for the select and gave up on it),
    // then retries the same select: "held" must mean the route is there again.
    store
        .unregister_routes(&p, std::slice::from_ref(&route))
        .await
        .unwrap();
    let lookup = store
        .lookup_routes(std::slice::from_ref(&query))
        .await
        .unwrap();
    assert_eq!(lookup.results, vec![vec![]]);
    assert!(store.select_chat(&p, &mine, &chat("ch7")).await.unwrap());
    let lookup = store
        .lookup_routes(std::slice::from_ref(&query))
        .await
        .unwrap();
    assert_eq!(lookup.results, vec![vec![p.clone()]]);
    assert!(store.select_chat(&p, &mine, &chat("ch7")).await.unwrap());
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(session.selected_chat, Some(chat("ch7")));
}

pub(crate) async fn a_kill_racing_an_admission_is_remembered(f: &impl Factory) {
    let store = f.store(relaxed());
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let first = take(&store, &key, &p, "c1").await;

    // The kill names c2 while c2's acquire is still in flight: nothing to delete yet.
    assert_eq!(
        store
            .kill_session(&key, Some(&conn("c2")), "kill the newcomer")
            .await,
        Ok(None)
    );
    assert_eq!(
        store.acquire(takeover(&key, &p, "c2")).await.unwrap(),
        AcquireOutcome::Ended {
            reason: EndReason::KilledByAdmin,
            current: Some(Holder {
                pod: p.clone(),
                connection: conn("c1"),
                fencing: first.fencing,
            }),
        },
        "the late acquire is refused and takes nothing over"
    );
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(session.holder.connection, conn("c1"));
    let guessed = HeldSession {
        key: key.clone(),
        connection: conn("c2"),
        fencing: FencingToken(first.fencing.0 + 1),
    };
    assert_eq!(
        renew_one(&store, &p, &guessed).await.reason,
        EndReason::KilledByAdmin
    );

    // The other order: the acquire ran, its reply is still on the wire when the kill (of
    // whoever holds the key) lands; the edge's retry of that acquire is refused.
    let third = take(&store, &key, &p, "c3").await;
    let killed = store
        .kill_session(&key, None, "kill whoever holds it")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(killed.holder.connection, conn("c3"));
    assert_eq!(
        store.acquire(takeover(&key, &p, "c3")).await.unwrap(),
        AcquireOutcome::Ended {
            reason: EndReason::KilledByAdmin,
            current: None,
        }
    );
    assert_eq!(
        renew_one(&store, &p, &held(&key, "c3", &third))
            .await
            .reason,
        EndReason::KilledByAdmin
    );
    assert_eq!(store.get_session(&key).await.unwrap(), None);
}

pub(crate) async fn tombstones_lapse_after_their_lifetime(f: &impl Factory) {
    let settings = StoreSettings {
        tombstone_ttl: Duration::from_secs(2),
        ..relaxed()
    };
    let store = f.store(settings);
    let p = register(&store, "edge-1").await;
    let key = user("u1");
    let grant = take(&store, &key, &p, "c1").await;
    store.kill_session(&key, None, "abuse").await.unwrap();
    let lost = renew_one(&store, &p, &held(&key, "c1", &grant)).await;
    assert_eq!(lost.reason, EndReason::KilledByAdmin);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // Forgotten: the connection is an ordinary stranger again.
    let lost = renew_one(&store, &p, &held(&key, "c1", &grant)).await;
    assert_eq!(lost.reason, EndReason::Expired);
    assert!(matches!(
        store.acquire(if_vacant(&key, &p, "c1")).await.unwrap(),
        AcquireOutcome::Granted(_)
    ));
}

pub(crate) async fn an_abandoned_connection_is_released_and_never_granted(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let abandoned = |key: &SessionKey, c: &str| HeldSession {
        key: key.clone(),
        connection: conn(c),
        fencing: FencingToken::ABANDONED,
    };
    // The acquire ran, its answer was lost: the abandon releases the grant, whatever its token.
    let key = user("u1");
    take(&store, &key, &p1, "c1").await;
    let released = store.release(&p1, &[abandoned(&key, "c1")]).await.unwrap();
    assert_eq!(released.count, 1);
    assert_eq!(store.get_session(&key).await.unwrap(), None);
    assert_eq!(
        store.acquire(takeover(&key, &p1, "c1")).await.unwrap(),
        AcquireOutcome::Ended {
            reason: EndReason::Expired,
            current: None,
        },
        "a retry of the abandoned acquire is refused"
    );

    // The acquire lands after the abandon: refused, and it takes nothing over.
    let key = user("u2");
    let holder = take(&store, &key, &p2, "c7").await;
    let released = store.release(&p1, &[abandoned(&key, "c2")]).await.unwrap();
    assert_eq!(released.count, 0);
    assert_eq!(released.not_held, vec![abandoned(&key, "c2")]);
    assert_eq!(
        store.acquire(takeover(&key, &p1, "c2")).await.unwrap(),
        AcquireOutcome::Ended {
            reason: EndReason::Expired,
            current: Some(Holder {
                pod: p2.clone(),
                connection: conn("c7"),
                fencing: holder.fencing,
            }),
        }
    );
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(session.holder.connection, conn("c7"));

    // Another pod's abandon of the same connection id releases nothing of this one.
    let key = user("u3");
    take(&store, &key, &p2, "c3").await;
    assert_eq!(
        store
            .release(&p1, &[abandoned(&key, "c3")])
            .await
            .unwrap()
            .count,
        0
    );
    assert!(store.get_session(&key).await.unwrap().is_some());
}

/// A pod acts only as itself: knowing another pod's connection and token (a renew or acquire
/// answer used to tell them) releases, abandons, tombstones, selects and keeps nothing of that
/// pod's session.
pub(crate) async fn a_pod_cannot_release_another_pods_session(f: &impl Factory) {
    let store = f.store(relaxed());
    let (p1, p2) = (
        register(&store, "edge-1").await,
        register(&store, "edge-2").await,
    );
    let key = user("u1");
    let grant = take(&store, &key, &p2, "c2").await;
    let theirs = held(&key, "c2", &grant);
    let abandoned = HeldSession {
        fencing: FencingToken::ABANDONED,
        ..theirs.clone()
    };

    let released = store
        .release(&p1, &[theirs.clone(), abandoned.clone()])
        .await
        .unwrap();
    assert_eq!(released.count, 0, "edge-1 released edge-2's session");
    assert_eq!(released.not_held, vec![theirs.clone(), abandoned]);
    assert!(
        !store.select_chat(&p1, &theirs, &chat("ch1")).await.unwrap(),
        "edge-1 selected a chat in edge-2's session"
    );
    let query = RouteQuery::Chat {
        company: "c1".parse().unwrap(),
        agent: "a1".parse().unwrap(),
        chat: chat("ch1"),
    };
    let lookup = store
        .lookup_routes(std::slice::from_ref(&query))
        .await
        .unwrap();
    assert_eq!(lookup.results, vec![Vec::<PodId>::new()]);
    let lost = store
        .renew(&p1, std::slice::from_ref(&theirs))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1, "edge-2's grant is not edge-1's to keep");

    // edge-2 still holds it, listed, with its selection untouched.
    let session = store.get_session(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            &session.holder.pod,
            &session.holder.connection,
            session.holder.fencing
        ),
        (&p2, &conn("c2"), grant.fencing)
    );
    assert_eq!(session.selected_chat, None);
    assert_eq!(
        store
            .renew(&p2, std::slice::from_ref(&theirs))
            .await
            .unwrap(),
        Vec::new()
    );
    let listed = store
        .list_sessions(
            &SessionFilter::Company("c1".parse().unwrap()),
            &PageRequest {
                size: 10,
                token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "the listing lost edge-2's session");
    // Nothing tombstoned the connection: after edge-2's own release it may acquire again.
    let released = store
        .release(&p2, std::slice::from_ref(&theirs))
        .await
        .unwrap();
    assert_eq!(released.count, 1);
    assert!(matches!(
        store.acquire(if_vacant(&key, &p2, "c2")).await.unwrap(),
        AcquireOutcome::Granted(_)
    ));
}

/// A lapsed pod with many sessions and routes is purged (swept chunk by chunk on Redis) while
/// the pod registers again and its new instance acquires sessions, half of them keys the old
/// instance held, and registers routes, one of them a route the old instance had: the purge
/// removes everything of the old instance and nothing of the new one. The old sessions are
/// vacant all along (their holder is dead), so the new grants kill nobody; each old session is
/// purged at most once (those the new instance took first are not counted).
pub(crate) async fn a_sweep_spares_what_a_re_registered_pod_holds(f: &impl Factory) {
    const OLD: usize = 300;
    const OLD_ROUTES: usize = 30;
    const NEW: usize = 100;
    let lease = Duration::from_secs(2);
    let (a, b) = f.replicas(StoreSettings {
        pod_lease: lease,
        ..relaxed()
    });
    let agent = |i: usize| Route::Agent {
        company: "c1".parse().unwrap(),
        agent: format!("a{i}").parse().unwrap(),
    };
    let p = register(&a, "edge-1").await;
    let old_life = PodHeartbeat {
        pod: p.clone(),
        instance: "edge-1-i1".to_owned(),
        delivery_address: "http://edge-1:50061".to_owned(),
        load: None,
    };
    let keys: Vec<usize> = (0..OLD).collect();
    for batch in keys.chunks(50) {
        let beat = a.heartbeat(&old_life).await.unwrap();
        assert!(matches!(beat, HeartbeatOutcome::Renewed { .. }), "{beat:?}");
        futures_util::future::join_all(batch.iter().map(|&i| {
            let key = user(&format!("u{i}"));
            let routes = vec![agent(i % OLD_ROUTES)];
            let (a, p) = (&a, &p);
            async move { take_with(a, &key, p, &format!("old{i}"), routes).await }
        }))
        .await;
    }
    tokio::time::sleep(lease + Duration::from_millis(300)).await;

    let new_life = PodHeartbeat {
        instance: "edge-1-i2".to_owned(),
        ..old_life
    };
    let new_routes = vec![agent(0), agent(1000)];
    let reaper = async {
        let reaped = a.reap_expired_pods().await.unwrap();
        assert!(reaped.iter().all(|(q, _)| q == &p), "{reaped:?}");
        reaped
    };
    let newcomer = async {
        // Wait until the reaper has claimed the pod (its routes vanish from the listing), so
        // the new instance's acquires race the sweep rather than follow it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !b
            .list_routes(
                &RouteSelector::Pod(p.clone()),
                &PageRequest {
                    size: 1000,
                    token: None,
                },
            )
            .await
            .unwrap()
            .items
            .is_empty()
        {
            assert!(tokio::time::Instant::now() < deadline, "never claimed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let HeartbeatOutcome::Registered { purged, .. } = b.heartbeat(&new_life).await.unwrap()
        else {
            panic!("a new instance registers");
        };
        let mut grants = Vec::new();
        for i in 0..NEW {
            if i % 20 == 0 {
                b.heartbeat(&new_life).await.unwrap();
            }
            for (key, c) in [
                (user(&format!("u{i}")), format!("new-u{i}")),
                (user(&format!("n{i}")), format!("new-n{i}")),
            ] {
                let grant = take_with(&b, &key, &p, &c, new_routes.clone()).await;
                assert_eq!(grant.previous, None, "a dead holder is never taken over");
                grants.push(held(&key, &c, &grant));
            }
        }
        (purged, grants)
    };
    let (reaped, (at_registration, grants)) = tokio::join!(reaper, newcomer);

    // A sweep the reaper left unfinished is completed by a later pass.
    let mut purged = at_registration;
    for (_, counts) in reaped {
        purged.sessions += counts.sessions;
        purged.routes += counts.routes;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while (purged.sessions as usize) < OLD - NEW {
        assert!(tokio::time::Instant::now() < deadline, "sweep never ends");
        b.heartbeat(&new_life).await.unwrap();
        for (_, counts) in a.reap_expired_pods().await.unwrap() {
            purged.sessions += counts.sessions;
            purged.routes += counts.routes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged.sessions as usize <= OLD, "{purged:?}");
    assert_eq!(purged.routes as usize, OLD_ROUTES);

    b.heartbeat(&new_life).await.unwrap();
    assert!(b.renew(&p, &grants).await.unwrap().is_empty());
    for session in &grants {
        let info = b.get_session(&session.key).await.unwrap().expect("held");
        assert_eq!(info.holder.connection, session.connection);
    }
    for i in NEW..OLD {
        assert_eq!(b.get_session(&user(&format!("u{i}"))).await.unwrap(), None);
    }
    let lookup = b
        .lookup_routes(&[
            RouteQuery::Agent {
                company: "c1".parse().unwrap(),
                agent: "a0".parse().unwrap(),
            },
            RouteQuery::Agent {
                company: "c1".parse().unwrap(),
                agent: "a1000".parse().unwrap(),
            },
            RouteQuery::Agent {
                company: "c1".parse().unwrap(),
                agent: "a1".parse().unwrap(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        lookup.results,
        vec![vec![p.clone()], vec![p.clone()], vec![]]
    );
    let mut routes: Vec<Route> = b
        .list_routes(
            &RouteSelector::Pod(p),
            &PageRequest {
                size: 1000,
                token: None,
            },
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|entry| entry.route)
        .collect();
    routes.sort_by_key(ToString::to_string);
    assert_eq!(routes, new_routes);
}

/// A session is valid only while the pod registration that holds it lives: once the pod's lease
/// lapsed, its sessions are vacant at once (no reaper ran, their own leases are long), an
/// if-vacant acquire on another pod gets them with a greater token and the selected chat, and
/// nobody is killed. When the pod comes back (same instance), its old grants are lost.
pub(crate) async fn a_session_of_a_lapsed_pod_is_vacant_at_once(f: &impl Factory) {
    // Long enough for edge-2 to outlive the rest of the test on a loaded machine.
    let lease = Duration::from_secs(2);
    let (a, b) = f.replicas(StoreSettings {
        pod_lease: lease,
        ..relaxed()
    });
    let dying = register(&a, "edge-1").await;
    let key = user("u1");
    let old = take(&a, &key, &dying, "c1").await;
    let old_held = held(&key, "c1", &old);
    assert!(a.select_chat(&dying, &old_held, &chat("x")).await.unwrap());
    let mut kills = b.watch_commands(&dying).await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;

    assert_eq!(b.get_session(&key).await.unwrap(), None);
    let listed = b
        .list_sessions(
            &SessionFilter::Company("c1".parse().unwrap()),
            &PageRequest {
                size: 10,
                token: None,
            },
        )
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "{listed:?}");
    assert_eq!(b.kill_session(&key, None, "gone").await.unwrap(), None);

    let other = register(&b, "edge-2").await;
    let granted = match b
        .acquire(AcquireRequest {
            key: key.clone(),
            pod: other.clone(),
            connection: conn("c2"),
            mode: AcquireMode::IfVacant,
            routes: Vec::new(),
        })
        .await
        .unwrap()
    {
        AcquireOutcome::Granted(grant) => grant,
        other => panic!("a dead pod's session is vacant: {other:?}"),
    };
    assert_eq!(granted.previous, None);
    assert!(granted.fencing > old.fencing);
    assert_eq!(granted.selected_chat, Some(chat("x")));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), kills.next())
            .await
            .is_err(),
        "nobody is killed when a dead pod's session is taken"
    );

    // The pod returns with the same instance: a new life, whose renew of the old grant fails.
    register(&a, "edge-1").await;
    let lost = renew_one(&a, &dying, &old_held).await;
    assert_eq!(lost.reason, EndReason::TakenOver);
    assert_eq!(
        lost.current.map(|h| h.connection),
        Some(conn("c2")),
        "the new holder is reported"
    );
}

/// Every kill command is also kept in its pod's inbox, which the pod's heartbeats read: a kill
/// nobody was watching for (pub/sub message or stream lost) is still there, on any replica,
/// until the pod acknowledges it; applying it twice is harmless, so it is answered again until
/// then.
pub(crate) async fn a_kill_reaches_the_holder_through_the_inbox_when_the_stream_lost_it(
    f: &impl Factory,
) {
    let (a, b) = f.replicas(relaxed());
    let (p1, p2) = (register(&a, "edge-1").await, register(&a, "edge-2").await);
    let key = user("u1");
    // Nobody watches edge-1's commands: the takeover's kill message is lost.
    let old = take(&a, &key, &p1, "c1").await;
    let new = take(&a, &key, &p2, "c2").await;
    assert!(new.previous.is_some());

    let inbox = b.pod_inbox(&p1, 0).await.unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let kill = &inbox[0].command;
    assert_eq!(
        (
            &kill.pod,
            &kill.key,
            &kill.connection,
            kill.fencing,
            kill.reason
        ),
        (&p1, &key, &conn("c1"), old.fencing, EndReason::TakenOver)
    );
    assert_eq!(
        b.pod_inbox(&p1, 0).await.unwrap(),
        inbox,
        "kept until acknowledged"
    );
    assert!(b.pod_inbox(&p2, 0).await.unwrap().is_empty());

    // An operator's kill lands in the inbox of the holder's pod, with a later sequence.
    assert!(a.kill_session(&key, None, "bye").await.unwrap().is_some());
    let killed = b.pod_inbox(&p2, 0).await.unwrap();
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0].command.connection, conn("c2"));
    assert_eq!(killed[0].command.reason, EndReason::KilledByAdmin);
    assert_eq!(killed[0].command.message, "bye");
    // Sequences increase per pod (each pod acknowledges its own): a later kill for edge-1
    // comes after the first.
    let other = user("u2");
    take(&a, &other, &p1, "c3").await;
    take(&a, &other, &p2, "c4").await;
    let later = b.pod_inbox(&p1, inbox[0].sequence).await.unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0].sequence > inbox[0].sequence);
    assert_eq!(later[0].command.connection, conn("c3"));

    // Acknowledged entries are gone for good.
    assert!(
        a.pod_inbox(&p1, later[0].sequence)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.pod_inbox(&p1, 0).await.unwrap().is_empty());
}
