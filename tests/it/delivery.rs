//! Delivery: isolation, order, offline replay, slow consumers, shutdown.
