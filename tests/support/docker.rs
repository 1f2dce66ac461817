//! Docker helpers for end-to-end tests (filled in by the Docker target tests).
