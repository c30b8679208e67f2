//! Pod registrations of [`RedisStore`]: heartbeats, deregistration, the reaper, listings.
//! A pod's state lives in its own slot; the deployment slot keeps only the index of when a
//! reaper should look at each pod (`{P}:pods`), written before the pod's slot so a registered
//! pod is always in it, and removed only once the pod is gone and swept.

use super::sweep::SWEEP_LOCK;
use super::{RedisStore, decode, millis};
use crate::store::types::*;
use crate::store::{StoreError, StoreResult};
use daisi_domain::PodId;

/// Pods claimed per reaper call.
const REAP_LIMIT: usize = 64;
/// Reads of a registration that changed under a pod step before giving up.
const ATTEMPTS: usize = 3;

/// What a pod step answered after its registration check.
enum PodStep {
    Retry(String),
    Done(Vec<String>),
}

fn pod_step(answer: Vec<String>) -> PodStep {
    match answer.as_slice() {
        [status, generation] if status == "retry" => PodStep::Retry(generation.clone()),
        _ => PodStep::Done(answer),
    }
}

impl RedisStore {
    /// Runs a pod-slot script that claims registration `expected` (sweep keys declared for
    /// it) until the registration it read is the one it claims.
    async fn claiming(
        &self,
        script: &redis::Script,
        pod: &PodId,
        head_keys: &[String],
        args: impl Fn(&str) -> Vec<String>,
        mut expected: String,
    ) -> StoreResult<(String, Vec<String>)> {
        for _ in 0..ATTEMPTS {
            let sweep = self.inner.keys.sweep(pod, &expected);
            let mut keys = head_keys.to_vec();
            keys.extend([sweep.record, sweep.sessions, sweep.routes]);
            let answer: Vec<String> = self.script(script, &keys, &args(&expected)).await?;
            match pod_step(answer) {
                PodStep::Retry(current) => expected = current,
                PodStep::Done(answer) => return Ok((expected, answer)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the registration of {pod} changed {ATTEMPTS} times in a row"
        )))
    }

    pub(super) async fn heartbeat_steps(
        &self,
        heartbeat: &PodHeartbeat,
    ) -> StoreResult<HeartbeatOutcome> {
        let pod = &heartbeat.pod;
        let lease = millis(self.inner.settings.pod_lease).to_string();
        let lock = millis(SWEEP_LOCK).to_string();
        let _: Vec<String> = self
            .script(
                &self.inner.scripts.pods_touch,
                &[self.inner.keys.pods()],
                &[pod.as_str(), lease.as_str()],
            )
            .await?;
        let (users, admins) = heartbeat.load.map_or((String::new(), String::new()), |l| {
            (l.user_sockets.to_string(), l.admin_sockets.to_string())
        });
        let keys = self.inner.keys.pod(pod);
        let head = [
            keys.pod,
            keys.gen_seq,
            keys.sweeps,
            keys.sessions,
            keys.routes,
        ];
        let (_, answer) = self
            .claiming(
                &self.inner.scripts.heartbeat,
                pod,
                &head,
                |expected| {
                    vec![
                        pod.to_string(),
                        heartbeat.instance.clone(),
                        heartbeat.delivery_address.clone(),
                        lease.clone(),
                        lock.clone(),
                        users.clone(),
                        admins.clone(),
                        expected.to_owned(),
                    ]
                },
                String::new(),
            )
            .await?;
        let corrupt = || StoreError::Corrupt(format!("heartbeat answered {answer:?}"));
        let Some((status, rest)) = answer.split_first() else {
            return Err(corrupt());
        };
        let Some((registration, rest)) = rest.split_first() else {
            return Err(corrupt());
        };
        let registration: u64 = registration.parse().map_err(|_| corrupt())?;
        match status.as_str() {
            "renewed" => {
                self.sweep_all(pod, rest, Some(self.inner.timeout)).await;
                Ok(HeartbeatOutcome::Renewed { registration })
            }
            "registered" => {
                let purged = self.sweep_all(pod, rest, Some(self.inner.timeout)).await;
                Ok(HeartbeatOutcome::Registered {
                    purged,
                    registration,
                })
            }
            _ => Err(corrupt()),
        }
    }

    pub(super) async fn deregister_steps(
        &self,
        pod: &PodId,
        instance: &str,
    ) -> StoreResult<Purged> {
        let keys = self.inner.keys.pod(pod);
        let lock = millis(SWEEP_LOCK).to_string();
        let head = [keys.pod, keys.sweeps, keys.sessions, keys.routes];
        let (_, answer) = self
            .claiming(
                &self.inner.scripts.deregister,
                pod,
                &head,
                |expected| {
                    vec![
                        pod.to_string(),
                        instance.to_owned(),
                        expected.to_owned(),
                        lock.clone(),
                    ]
                },
                String::new(),
            )
            .await?;
        // The pod's index entry stays: the reaper removes it once it finds the pod gone.
        match answer.as_slice() {
            [status] if status == "none" => Ok(Purged::default()),
            [status, sweep] if status == "claimed" => Ok(self
                .sweep_all(pod, std::slice::from_ref(sweep), Some(self.inner.timeout))
                .await),
            _ => Err(StoreError::Corrupt(format!(
                "deregister answered {answer:?}"
            ))),
        }
    }

    /// Runs the sweeps `generations` of `pod` ('' entries are skipped), adding up what they
    /// removed.
    async fn sweep_all(
        &self,
        pod: &PodId,
        generations: &[String],
        budget: Option<std::time::Duration>,
    ) -> Purged {
        let mut purged = Purged::default();
        for generation in generations.iter().filter(|g| !g.is_empty()) {
            let swept = self.sweep(pod, generation, budget).await;
            purged.sessions += swept.purged.sessions;
            purged.routes += swept.purged.routes;
        }
        purged
    }

    pub(super) async fn reap_steps(&self) -> StoreResult<Vec<(PodId, Purged)>> {
        let lock = millis(SWEEP_LOCK).to_string();
        let index = self.inner.keys.pods();
        let due: Vec<String> = self
            .script(
                &self.inner.scripts.reap_due,
                &[&index],
                &[REAP_LIMIT.to_string(), lock.clone()],
            )
            .await?;
        let mut reaped = Vec::new();
        for entry in due.chunks(2) {
            let [pod, score] = entry else {
                return Err(StoreError::Corrupt("truncated reap answer".to_owned()));
            };
            let pod: PodId = decode::parse("pod_id", pod)?;
            if let Some(purged) = self.reap_pod(&pod, score).await? {
                reaped.push((pod, purged));
            }
        }
        Ok(reaped)
    }

    /// Looks at one due pod: reschedules it when live, else claims its lapsed registration,
    /// runs its sweeps and removes it from the index once nothing is left. Answers what was
    /// purged when this call claimed the pod or swept something.
    async fn reap_pod(&self, pod: &PodId, score: &str) -> StoreResult<Option<Purged>> {
        let keys = self.inner.keys.pod(pod);
        let lock = millis(SWEEP_LOCK).to_string();
        let head = [
            keys.pod.clone(),
            keys.sweeps.clone(),
            keys.sessions,
            keys.routes,
        ];
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&keys.pod).arg("gen");
        let read: Option<String> = self.query(cmd).await?;
        let (_, answer) = self
            .claiming(
                &self.inner.scripts.reap_pod,
                pod,
                &head,
                |expected| vec![pod.to_string(), expected.to_owned(), lock.clone()],
                read.unwrap_or_default(),
            )
            .await?;
        let index = self.inner.keys.pods();
        match answer.as_slice() {
            [status, exp] if status == "live" => {
                self.reap_done(&index, pod, score, exp).await?;
                Ok(None)
            }
            [status, claimed, sweeps @ ..] if status == "dead" => {
                let purged = self.sweep_all(pod, sweeps, None).await;
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(&keys.pod).arg(&keys.sweeps);
                let left: u64 = self.query(cmd).await?;
                if left == 0 {
                    self.reap_done(&index, pod, score, "").await?;
                }
                let any = claimed == "1" || sweeps.iter().any(|g| !g.is_empty());
                Ok(any.then_some(purged))
            }
            _ => Err(StoreError::Corrupt(format!("reap answered {answer:?}"))),
        }
    }

    async fn reap_done(
        &self,
        index: &str,
        pod: &PodId,
        score: &str,
        next: &str,
    ) -> StoreResult<()> {
        let _: Vec<String> = self
            .script(
                &self.inner.scripts.reap_done,
                &[index],
                &[pod.as_str(), score, next],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn resolve_steps(&self, pods: &[PodId]) -> StoreResult<Resolved> {
        let records = self.pod_records(pods).await?;
        let mut resolved = Resolved::default();
        for (pod, record) in pods.iter().zip(records) {
            match record {
                Some((_, record)) => resolved.pods.push(record),
                None => resolved.unknown.push(pod.clone()),
            }
        }
        Ok(resolved)
    }

    pub(super) async fn list_pods_steps(
        &self,
        cursor: &str,
        size: usize,
    ) -> StoreResult<(String, Vec<PodRecord>)> {
        let mut cmd = redis::cmd("ZSCAN");
        cmd.arg(self.inner.keys.pods())
            .arg(cursor)
            .arg("COUNT")
            .arg(size.max(1));
        let (next, flat): (String, Vec<String>) = self.query(cmd).await?;
        let pods = flat
            .iter()
            .step_by(2)
            .map(|p| decode::parse("pod_id", p))
            .collect::<StoreResult<Vec<PodId>>>()?;
        let records = self.pod_records(&pods).await?;
        Ok((
            next,
            records.into_iter().flatten().map(|(_, r)| r).collect(),
        ))
    }
}
