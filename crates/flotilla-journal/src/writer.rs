//! The single writer: one OS thread owns the SQLite connection and runs operations sent to it
//! over a channel, one at a time, in arrival order.
//!
//! Why a dedicated thread rather than a `Mutex<Connection>` used from `spawn_blocking`: waiting
//! callers queue in a channel instead of each parking a blocking-pool thread on the mutex (a burst
//! of envelopes would otherwise pin dozens of pool threads), the order of writes is the order of
//! calls, the connection is closed on a known thread at a known time (`close` returns after the
//! file lock is released, so a restart can reopen at once), and the journal works without a
//! tokio runtime on the writer side.

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;

use tokio::sync::oneshot;

use crate::error::{JournalError, Result};
use crate::store::{Store, StoreConfig};

type Job = Box<dyn FnOnce(&mut Store) + Send>;

enum Command {
    Run(Job),
    Close(oneshot::Sender<()>),
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    /// `None` once `close` was called. Taking the sender out under the lock orders every send
    /// either before the close command (it runs) or after it (`Closed`, nothing written); a plain
    /// sender would let a late command slip into the queue and be dropped unanswered.
    tx: Arc<Mutex<Option<mpsc::Sender<Command>>>>,
}

impl Writer {
    /// Starts the thread, opens the store on it and waits until it is open.
    pub(crate) async fn start(config: StoreConfig) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        thread::Builder::new()
            .name("flotilla-journal".to_owned())
            .spawn(move || {
                let mut store = match Store::open(config) {
                    Ok(store) => store,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(command) = rx.recv() {
                    match command {
                        Command::Run(job) => job(&mut store),
                        Command::Close(done) => {
                            // Dropping the connection checkpoints the WAL and releases the lock.
                            drop(store);
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(JournalError::Spawn)?;
        ready_rx.await.map_err(|_| JournalError::WriterLost)??;
        Ok(Self { tx: Arc::new(Mutex::new(Some(tx))) })
    }

    /// Runs `f` on the writer thread and returns its result. Dropping the returned future does
    /// not cancel the operation once it was handed over.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply_tx.send(f(store));
        });
        self.send(Command::Run(job))?;
        reply_rx.await.map_err(|_| JournalError::WriterLost)?
    }

    /// Finishes queued operations, closes the connection and stops the thread. Idempotent.
    pub(crate) async fn close(&self) -> Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        let Some(tx) = self.tx.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            // Already closed (by this or another clone): closing is idempotent.
            return Ok(());
        };
        if tx.send(Command::Close(done_tx)).is_err() {
            // The thread is gone, and with it the connection.
            return Ok(());
        }
        done_rx.await.map_err(|_| JournalError::WriterLost)
    }

    fn send(&self, command: Command) -> Result<()> {
        let guard = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = guard.as_ref().ok_or(JournalError::Closed)?;
        // Fails only when the thread is gone (it panicked): nothing of this command ran.
        tx.send(command).map_err(|_| JournalError::Closed)
    }
}
