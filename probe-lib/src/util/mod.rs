//! Small helpers every layer uses, each defined once: the retry backoff, the clock conversion
//! for exported timestamps, and the poison-tolerant lock. A leaf: imports nothing from the
//! crate.

pub mod backoff;
pub mod clock;
#[cfg(test)]
pub(crate) mod props;

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex, taking it over if a panicking holder poisoned it: the data guarded here is
/// always left consistent between statements, and one panicked task must not take every other
/// user of the lock down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_survives_poison() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
