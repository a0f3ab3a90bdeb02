//! Locking with poison recovery, written once.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard if another thread panicked while holding it.
///
/// Engine state behind a mutex is only ever changed in short sections that keep it
/// consistent at every step, so a panic elsewhere (a bug, already reported by the panic
/// itself) must not cascade into every later caller. Never hold the guard across an await.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_still_usable() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let r = std::panic::catch_unwind(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        });
        assert!(r.is_err());
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
