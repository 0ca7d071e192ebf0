//! Shared end-to-end harness.
