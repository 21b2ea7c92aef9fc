//! How many cold tiles render at once. Anonymous clients choose which tiles
//! they ask for, so each cold one is a render they make us pay for (about a
//! second of a core). Renders of one tile are joined into one
//! (single-flight), at most `max_concurrent_renders` run, at most
//! `max_queued_renders` wait, and past that the client gets the stale tile
//! if one is held, else 503 with `Retry-After`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, Semaphore, SemaphorePermit};

use crate::TileId;

/// The render limits and the renders under way.
pub(crate) struct Gate {
    renders: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    flights: Mutex<HashMap<TileId, Arc<tokio::sync::Mutex<()>>>>,
    rendered: AtomicU64,
}

/// This request's place in the flight for one tile: while held, others
/// asking for the same tile wait for its result instead of rendering.
pub(crate) struct Flight<'a> {
    gate: &'a Gate,
    id: TileId,
    cell: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut flights = self.gate.lock();
        // Ours and the map's: nobody else waits on this tile.
        if Arc::strong_count(&self.cell) <= 2
            && flights
                .get(&self.id)
                .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            flights.remove(&self.id);
        }
    }
}

impl Gate {
    pub(crate) fn new(max_renders: usize, max_waiting: usize) -> Self {
        Self {
            renders: Semaphore::new(max_renders),
            waiting: AtomicUsize::new(0),
            max_waiting,
            flights: Mutex::new(HashMap::new()),
            rendered: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TileId, Arc<tokio::sync::Mutex<()>>>> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `id`, returning once no other request for the
    /// same tile is rendering it (the caller then looks in the cache again).
    pub(crate) async fn join(&self, id: TileId) -> Flight<'_> {
        let cell = Arc::clone(self.lock().entry(id).or_default());
        let guard = Arc::clone(&cell).lock_owned().await;
        Flight {
            gate: self,
            id,
            cell,
            guard: Some(guard),
        }
    }

    /// A turn to render, or `None` when the queue is full.
    pub(crate) async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.renders.try_acquire() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let permit = self.renders.acquire().await.ok();
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit
    }

    pub(crate) fn count_render(&self) {
        self.rendered.fetch_add(1, Ordering::Relaxed);
    }

    /// Tiles rendered on demand so far.
    pub(crate) fn rendered(&self) -> u64 {
        self.rendered.load(Ordering::Relaxed)
    }

    /// Tiles with a flight open (rendering or waiting to).
    #[cfg(test)]
    pub(crate) fn flights(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_and_flights_are_forgotten() {
        let gate = Arc::new(Gate::new(1, 1));
        let held = gate.turn().await.unwrap();
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.turn().await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(gate.turn().await.is_none(), "the queue of one was full");
        drop(held);
        assert!(waiter.await.unwrap());
        let id = TileId::new(3, 1, 1).unwrap();
        drop(gate.join(id).await);
        assert_eq!(gate.flights(), 0);
    }
}
