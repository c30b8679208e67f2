//! Sweeps of ended pod registrations. A purge (reaper, new instance, deregistration) first
//! claims the registration in one O(1) script (`claim_pod` in `lua/common.lua`), then empties
//! it here in chunks of at most [`SWEEP_CHUNK`] sessions or routes, one short script each
//! (`lua/sweep.lua`), so other calls interleave and no script's run time grows with the size
//! of a pod.

use super::{RedisStore, decode, millis};
use crate::store::{Purged, StoreResult};
use daisi_domain::PodId;
use std::time::{Duration, Instant};

/// Most sessions (or routes) one sweep script handles: each dropped session touches about six
/// keys, so a chunk runs for well under a millisecond.
pub(super) const SWEEP_CHUNK: usize = 200;

/// How long a sweep stays locked to the replica running it after its latest chunk. A replica
/// that dies midway leaves the rest to a reaper pass once this has passed; two replicas on one
/// sweep are harmless (each session is popped, checked and dropped once).
pub(super) const SWEEP_LOCK: Duration = Duration::from_secs(5);

/// What a sweep run did.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// The swept pod (`None` when the sweep had already been finished by another replica).
    pub(super) pod: Option<PodId>,
    /// What this run removed.
    pub(super) purged: Purged,
    /// Whether the sweep is complete; if not, a reaper finishes it after [`SWEEP_LOCK`].
    pub(super) finished: bool,
}

impl RedisStore {
    /// Runs sweep `id` chunk by chunk until it is complete, a chunk fails, or `budget` (when
    /// given) has passed.
    pub(super) async fn sweep(&self, id: &str, budget: Option<Duration>) -> Swept {
        let started = Instant::now();
        let mut swept = Swept::default();
        loop {
            match self.sweep_chunk(id, &mut swept).await {
                Ok(true) => {
                    swept.finished = true;
                    return swept;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(sweep = id, %error, "pod sweep interrupted; a reaper finishes it");
                    return swept;
                }
            }
            if budget.is_some_and(|budget| started.elapsed() >= budget) {
                return swept;
            }
        }
    }

    /// One chunk; `true` when the sweep is complete.
    async fn sweep_chunk(&self, id: &str, swept: &mut Swept) -> StoreResult<bool> {
        let chunk = self.inner.chunk.min(SWEEP_CHUNK).to_string();
        let retention = self.retention_ms().to_string();
        let lock = millis(SWEEP_LOCK).to_string();
        let key = self.inner.keys.sweep(id);
        let answer: Vec<String> = self
            .bounded(self.script(
                &self.inner.scripts.sweep,
                &key,
                &[id, chunk.as_str(), retention.as_str(), lock.as_str()],
            ))
            .await?;
        let [status, pod, sessions, routes] = answer.as_slice() else {
            return Err(crate::store::StoreError::Corrupt(format!(
                "sweep answered {answer:?}"
            )));
        };
        if !pod.is_empty() {
            swept.pod = Some(decode::parse("pod_id", pod)?);
        }
        swept.purged.sessions += decode::parse::<u32>("count", sessions)?;
        swept.purged.routes += decode::parse::<u32>("count", routes)?;
        Ok(status == "done")
    }
}
