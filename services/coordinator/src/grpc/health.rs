//! The standard gRPC health service, with `Watch` streams that end when the server stops:
//! tonic-health's own streams never end, so one watching client would hold a graceful
//! shutdown open for the whole grace period.

use daisi_runtime::CancellationToken;
use futures_util::StreamExt;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// Health answers from `reporter`; watch streams end on `stop`.
#[derive(Debug)]
pub(crate) struct StoppingHealth {
    inner: HealthService,
    stop: CancellationToken,
}

pub(crate) fn server(
    reporter: HealthReporter,
    stop: CancellationToken,
) -> HealthServer<StoppingHealth> {
    HealthServer::new(StoppingHealth {
        inner: HealthService::from_health_reporter(reporter),
        stop,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for StoppingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let stopped = self.stop.clone().cancelled_owned();
        Ok(Response::new(Box::pin(statuses.take_until(stopped))))
    }
}
