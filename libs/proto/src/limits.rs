//! Batch and size limits of the gRPC API. The proto comments state the same numbers; servers
//! reject larger requests with `INVALID_ARGUMENT`, clients split their batches to fit.

/// Sessions per `SessionService.Renew` call.
pub const MAX_RENEW_BATCH: usize = 10_000;

/// Sessions per `SessionService.Release` call.
pub const MAX_RELEASE_BATCH: usize = 10_000;

/// Routes registered along with one `SessionService.Acquire`.
pub const MAX_ACQUIRE_ROUTES: usize = 16;

/// Routes per `RouteService.RegisterRoutes` / `UnregisterRoutes` call.
pub const MAX_ROUTE_BATCH: usize = 10_000;

/// Queries per `RouteService.LookupRoutes` call.
pub const MAX_LOOKUP_BATCH: usize = 1_000;

/// Pod ids per `PodService.ResolvePods` call.
pub const MAX_RESOLVE_BATCH: usize = 1_000;

/// Upper bound of `page_size` in `CoordinatorAdmin` listings (larger values are clamped).
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// `page_size` used when a listing asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Events per `EdgeDelivery.Deliver` call.
pub const MAX_DELIVER_BATCH: usize = 1_000;

/// Encoded size a router keeps a `DeliverRequest` under (tonic's default decode limit).
pub const MAX_DELIVER_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Decode limit edges set on their `EdgeDelivery` server (`max_decoding_message_size`):
/// twice the router's target, so a batch that slightly overshoots is still accepted.
pub const EDGE_MAX_DECODING_BYTES: usize = 2 * MAX_DELIVER_REQUEST_BYTES;

/// Longest identifier accepted anywhere in the API, in bytes (compat.md).
pub const MAX_ID_BYTES: usize = 128;
