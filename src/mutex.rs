//! The one way the crate locks a `std::sync::Mutex`. A leaf, so the registry, the flag store,
//! the shadow comparator and the guard share it without depending on each other.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, carrying on past poisoning: every critical section here leaves the data
/// consistent before anything that could panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
