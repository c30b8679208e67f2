//! The gRPC surface with the in-memory store: validation of ids and batch sizes, unknown pods,
//! operator calls, health, and the shutdown order.

use crate::support::*;
use daisi_coordinator::Config;
use daisi_proto::coordinator::v1 as pb;
use daisi_proto::limits;
use std::time::Duration;
use tonic::Code;

fn assert_invalid(status: &tonic::Status, needle: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} lacks {needle:?}",
        status.message()
    );
}

#[tokio::test]
async fn invalid_ids_and_oversized_batches_are_rejected_with_a_reason() {
    let c = Replica::start(Config::for_tests()).await;
    let mut sessions = c.sessions();

    let mut bad_key = acquire_request("u.1", "edge-1", "conn-1");
    let error = sessions.acquire(bad_key.clone()).await.unwrap_err();
    assert_invalid(&error, "key.user: user_id must not contain '.'");
    bad_key.key = None;
    let error = sessions.acquire(bad_key).await.unwrap_err();
    assert_invalid(&error, "key is required");
    let error = sessions
        .acquire(acquire_request("u1", "edge 1", "conn-1"))
        .await
        .unwrap_err();
    assert_invalid(&error, "pod_id must not contain whitespace");
    let error = sessions
        .acquire(acquire_request("u1", "edge-1", ""))
        .await
        .unwrap_err();
    assert_invalid(&error, "connection_id must not be empty");
    let mut many_routes = acquire_request("u1", "edge-1", "conn-1");
    many_routes.routes = vec![agent_route(); limits::MAX_ACQUIRE_ROUTES + 1];
    let error = sessions.acquire(many_routes).await.unwrap_err();
    assert_invalid(&error, "routes: at most 16 items per call (got 17)");

    let too_many = vec![held("u1", "conn-1", 1); limits::MAX_RENEW_BATCH + 1];
    let error = sessions
        .renew(pb::RenewRequest {
            pod_id: "edge-1".to_owned(),
            sessions: too_many,
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "sessions: at most 10000 items per call");
    let error = sessions
        .renew(pb::RenewRequest {
            pod_id: "edge-1".to_owned(),
            sessions: vec![held("u1", "conn-1", 1), held("u:2", "conn-1", 1)],
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "sessions[1].key.user: user_id must not contain ':'");

    let error = c
        .routes()
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![agent_query(); limits::MAX_LOOKUP_BATCH + 1],
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "queries: at most 1000 items per call");
    let error = c
        .routes()
        .lookup_routes(pb::LookupRoutesRequest {
            queries: vec![pb::RouteQuery { target: None }],
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "queries[0] must be an agent, chat or admins query");
    let error = c
        .pods()
        .resolve_pods(pb::ResolvePodsRequest {
            pod_ids: vec!["ok".to_owned(), "a>b".to_owned()],
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "pod_ids[1]: pod_id must not contain '>'");
    let error = c
        .pods()
        .heartbeat(pb::HeartbeatRequest {
            pod_id: "edge-1".to_owned(),
            instance_id: "i1".to_owned(),
            delivery_address: "10.0.0.1:50061".to_owned(),
            load: None,
            commands_acked: 0,
        })
        .await
        .unwrap_err();
    assert_invalid(
        &error,
        "delivery_address must be an http:// or https:// URI",
    );
}

#[tokio::test]
async fn calls_naming_an_unknown_pod_fail_with_failed_precondition() {
    let c = Replica::start(Config::for_tests()).await;
    let error = acquire(&c, "u1", "edge-1", "conn-1").await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("heartbeat"), "{error:?}");
    let error = c
        .sessions()
        .watch_pod_commands(pb::WatchPodCommandsRequest {
            pod_id: "edge-1".to_owned(),
            instance_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    let error = c
        .routes()
        .register_routes(pb::RegisterRoutesRequest {
            pod_id: "edge-1".to_owned(),
            routes: vec![agent_route()],
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);

    let first = heartbeat(&c, "edge-1").await.unwrap();
    assert_eq!(first.status, pb::PodLeaseStatus::Registered as i32);
    assert_eq!(first.heartbeat_interval.unwrap().seconds, 10);
    // Sessions live with the pod: no renew cadence, the pod lease is theirs.
    assert_eq!(first.renew_interval, None);
    assert_eq!(first.session_lease_ttl.unwrap().seconds, 30);
    let second = heartbeat(&c, "edge-1").await.unwrap();
    assert_eq!(second.status, pb::PodLeaseStatus::Renewed as i32);
    acquire(&c, "u1", "edge-1", "conn-1").await.unwrap();
}

/// Unspecified and TAKEOVER take over, IF_VACANT refuses, and a mode this coordinator does not
/// know is refused instead of being taken for the destructive takeover.
#[tokio::test]
async fn acquire_modes_are_read_strictly() {
    let c = Replica::start(Config::for_tests()).await;
    heartbeat(&c, "edge-1").await.unwrap();
    let mut sessions = c.sessions();
    let with_mode = |connection: &str, mode: i32| pb::AcquireRequest {
        mode,
        ..acquire_request("u1", "edge-1", connection)
    };
    let granted = |answer: pb::AcquireResponse| {
        matches!(
            answer.outcome,
            Some(pb::acquire_response::Outcome::Granted(_))
        )
    };
    let unspecified = pb::AcquireMode::Unspecified as i32;
    let answer = sessions.acquire(with_mode("conn-1", unspecified)).await;
    assert!(
        granted(answer.unwrap().into_inner()),
        "unspecified is takeover"
    );
    let unknown = sessions.acquire(with_mode("conn-2", 7)).await.unwrap_err();
    assert_invalid(&unknown, "mode: unknown acquire mode 7");
    let session = c
        .admin()
        .get_session(pb::GetSessionRequest {
            key: Some(user_key("u1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        session.session.unwrap().holder.unwrap().connection_id,
        "conn-1",
        "the unknown mode took nothing over"
    );
    let if_vacant = pb::AcquireMode::IfVacant as i32;
    let answer = sessions.acquire(with_mode("conn-3", if_vacant)).await;
    assert!(!granted(answer.unwrap().into_inner()), "if-vacant refuses");
    let takeover = pb::AcquireMode::Takeover as i32;
    let answer = sessions.acquire(with_mode("conn-4", takeover)).await;
    assert!(granted(answer.unwrap().into_inner()));
}

#[tokio::test]
async fn operators_list_get_and_kill_sessions() {
    let c = Replica::start(Config::for_tests()).await;
    heartbeat(&c, "edge-1").await.unwrap();
    let granted = acquire(&c, "u1", "edge-1", "conn-1").await.unwrap();
    let mut admin = c.admin();
    let listed = admin
        .list_sessions(pb::ListSessionsRequest {
            filter: Some(pb::list_sessions_request::Filter::Agent(pb::AgentFilter {
                company_id: "c1".to_owned(),
                agent_id: "a1".to_owned(),
            })),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    assert_eq!(
        listed.sessions[0].holder.as_ref().unwrap().fencing_token,
        granted.fencing_token
    );
    assert!(listed.next_page_token.is_empty());

    let error = admin
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_invalid(&error, "filter is required");
    let error = admin
        .kill_session(pb::KillSessionRequest {
            key: Some(user_key("u1")),
            reason: "  ".to_owned(),
            connection_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&error, "reason is required");
    let error = admin
        .get_session(pb::GetSessionRequest {
            key: Some(user_key("nobody")),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    let killed = admin
        .kill_session(pb::KillSessionRequest {
            key: Some(user_key("u1")),
            reason: "test".to_owned(),
            connection_id: "conn-other".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !killed.killed,
        "a kill aimed at another connection changes nothing"
    );
    let killed = admin
        .kill_session(pb::KillSessionRequest {
            key: Some(user_key("u1")),
            reason: "test".to_owned(),
            connection_id: "conn-1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(killed.killed);
    // The killed connection's tombstone: renew tells the reason, a retried acquire is refused.
    let renewed = c
        .sessions()
        .renew(pb::RenewRequest {
            pod_id: "edge-1".to_owned(),
            sessions: vec![held("u1", "conn-1", granted.fencing_token)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost.len(), 1);
    assert_eq!(
        renewed.lost[0].reason,
        pb::SessionEndReason::KilledByAdmin as i32
    );
    let mut again = acquire_request("u1", "edge-1", "conn-1");
    again.mode = pb::AcquireMode::IfVacant as i32;
    let answer = c.sessions().acquire(again).await.unwrap().into_inner();
    match answer.outcome {
        Some(pb::acquire_response::Outcome::Refused(refused)) => {
            assert_eq!(refused.reason, pb::SessionEndReason::KilledByAdmin as i32);
            assert_eq!(refused.holder, None, "nobody holds the session");
        }
        other => panic!("a killed connection must be refused: {other:?}"),
    }
    let select = c
        .sessions()
        .select_chat(pb::SelectChatRequest {
            key: Some(pb::SessionKey {
                kind: Some(pb::session_key::Kind::Admin(pb::AdminSessionKey {
                    admin_id: "root".to_owned(),
                })),
            }),
            pod_id: "edge-1".to_owned(),
            connection_id: "conn-1".to_owned(),
            fencing_token: 1,
            chat_id: "ch".to_owned(),
        })
        .await
        .unwrap_err();
    assert_invalid(&select, "admin sessions do not select chats");
}

/// Shutdown: health turns NOT_SERVING before the server stops, command streams end cleanly
/// (status OK), and `run` returns well within the grace period.
#[tokio::test]
async fn shutdown_flips_health_first_and_ends_streams_cleanly() {
    let mut config = Config::for_tests();
    config.shutdown_grace = Duration::from_secs(2);
    let c = Replica::start(config).await;
    heartbeat(&c, "edge-1").await.unwrap();
    let mut stream = watch(&c, "edge-1").await;
    let mut health = c
        .health()
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "daisi.coordinator.v1.SessionService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = health.message().await.unwrap().unwrap();
    assert_eq!(serving.status, 1, "SERVING before shutdown");

    let (took, result) = c.stop().await;
    result.unwrap();
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    let next = health.message().await;
    assert!(
        matches!(next, Ok(Some(ref m)) if m.status == 2),
        "NOT_SERVING was reported before the server went away: {next:?}"
    );
    let mut ended_cleanly = false;
    for _ in 0..10 {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => {
                ended_cleanly = true;
                break;
            }
            Err(status) => panic!("stream ended with an error: {status:?}"),
        }
    }
    assert!(ended_cleanly);
}

#[tokio::test]
async fn reflection_and_health_are_served() {
    let c = Replica::start(Config::for_tests()).await;
    assert_eq!(c.serving().await, Some(true));
    let (status, body) = daisi_testkit::get_json(c.http, "/ready").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = daisi_testkit::get_json(c.http, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    heartbeat(&c, "edge-1").await.unwrap();
    let (_, body) = daisi_testkit::get_json(c.http, "/metrics").await.unwrap();
    let text = body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("daisi_coordinator_store_seconds"), "{text}");
}

/// A command stream of a pod instance that is replaced ends with FAILED_PRECONDITION.
#[tokio::test]
async fn a_replaced_instance_loses_its_command_stream() {
    let mut config = Config::for_tests();
    config.watch_ping_interval = Duration::from_millis(100);
    let c = Replica::start(config).await;
    heartbeat(&c, "edge-1").await.unwrap();
    let mut stream = watch(&c, "edge-1").await;
    let restarted = c
        .pods()
        .heartbeat(pb::HeartbeatRequest {
            pod_id: "edge-1".to_owned(),
            instance_id: "a-new-process".to_owned(),
            delivery_address: "http://10.0.0.1:50061".to_owned(),
            load: None,
            commands_acked: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restarted.status, pb::PodLeaseStatus::Registered as i32);
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, Some(Code::FailedPrecondition));
}

#[tokio::test]
async fn a_pod_lists_its_own_routes_page_by_page() {
    let c = Replica::start(Config::for_tests()).await;
    heartbeat(&c, "edge-1").await.unwrap();
    heartbeat(&c, "edge-2").await.unwrap();
    let chat = |id: usize| pb::Route {
        kind: Some(pb::route::Kind::Chat(pb::ChatRoute {
            company_id: "c1".to_owned(),
            agent_id: "a1".to_owned(),
            chat_id: format!("ch{id}"),
        })),
    };
    let mine: Vec<pb::Route> = std::iter::once(agent_route())
        .chain((0..4).map(chat))
        .collect();
    for (pod, routes) in [("edge-1", mine.clone()), ("edge-2", vec![chat(9)])] {
        c.routes()
            .register_routes(pb::RegisterRoutesRequest {
                pod_id: pod.to_owned(),
                routes,
            })
            .await
            .unwrap();
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .routes()
            .list_pod_routes(pb::ListPodRoutesRequest {
                pod_id: "edge-1".to_owned(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.routes.len() <= 2);
        listed.extend(page.routes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let key = |r: &pb::Route| format!("{r:?}");
    listed.sort_by_key(key);
    listed.dedup();
    let mut expected = mine;
    expected.sort_by_key(key);
    assert_eq!(listed, expected);
    let error = c
        .routes()
        .list_pod_routes(pb::ListPodRoutesRequest {
            pod_id: "edge 1".to_owned(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
}
