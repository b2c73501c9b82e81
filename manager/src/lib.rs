//! Shoal manager.
