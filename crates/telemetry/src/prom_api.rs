//! The Prometheus HTTP API (`/api/v1/...`) over the metrics store.
