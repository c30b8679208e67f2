//! One [`Edge`] per pod, created when a lookup first names the pod, replaced when the pod was
//! reported gone and comes back (a new instance), dropped after a long idle spell.

use super::EdgeClient;
use super::edge::{Edge, EdgeSettings};
use crate::metrics::RouterMetrics;
use crate::ratelog::RateLimit;
use crate::resolve::cache::RouteCache;
use crate::resolve::{Pod, RouteResolver};
use daisi_domain::PodId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The edges this router delivers to.
pub struct EdgeRegistry<C, R> {
    edges: HashMap<PodId, Edge<C, R>>,
    client: Arc<C>,
    resolver: Arc<RouteCache<R>>,
    settings: EdgeSettings,
    metrics: RouterMetrics,
    logs: Arc<RateLimit>,
    stop: CancellationToken,
}

impl<C, R> std::fmt::Debug for EdgeRegistry<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeRegistry")
            .field("edges", &self.edges.len())
            .finish()
    }
}

impl<C: EdgeClient, R: RouteResolver> EdgeRegistry<C, R> {
    /// An empty registry; `stop` ends every lane.
    pub fn new(
        client: Arc<C>,
        resolver: Arc<RouteCache<R>>,
        settings: EdgeSettings,
        metrics: RouterMetrics,
        stop: CancellationToken,
    ) -> Self {
        Self {
            edges: HashMap::new(),
            client,
            resolver,
            settings,
            metrics,
            logs: Arc::new(RateLimit::new(Duration::from_secs(30))),
            stop,
        }
    }

    /// The edge of `pod`, created or updated to the address the lookup reported.
    pub fn edge(&mut self, pod: &Pod) -> &Edge<C, R> {
        let stale = self.edges.get(&pod.id).is_some_and(Edge::is_gone);
        if stale && let Some(old) = self.edges.remove(&pod.id) {
            self.retire(&old);
        }
        let edge = self.edges.entry(pod.id.clone()).or_insert_with(|| {
            Edge::spawn(
                pod.id.clone(),
                pod.address.clone(),
                self.settings.clone(),
                self.client.clone(),
                self.resolver.clone(),
                self.metrics.clone(),
                self.logs.clone(),
                self.stop.child_token(),
            )
        });
        edge.set_address(&pod.address);
        edge
    }

    /// Drops edges with nothing to do for `idle` (their lanes end, their channels close).
    pub fn sweep(&mut self, idle: Duration) {
        let retired: Vec<PodId> = self
            .edges
            .iter()
            .filter(|(_, e)| e.is_idle(idle))
            .map(|(id, _)| id.clone())
            .collect();
        for id in retired {
            if let Some(edge) = self.edges.remove(&id) {
                self.retire(&edge);
            }
        }
    }

    fn retire(&self, edge: &Edge<C, R>) {
        self.client.forget(&edge.address());
        edge.retire_state();
    }

    /// Edges known.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether no edge is known.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}
