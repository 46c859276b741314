//! Signals: the first SIGINT/SIGTERM cancels the run (no new messages, in-flight ones finish,
//! the report is written); a second one exits at once. Every outcome already in the journal
//! stays there either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use mailmerge::CancellationToken;

/// Watches for signals; the returned cell holds the exit code of the first one (0: none).
pub fn watch(cancel: CancellationToken) -> Arc<AtomicU8> {
    let exit = Arc::new(AtomicU8::new(0));
    let code = exit.clone();
    tokio::spawn(async move {
        let mut received = 0u32;
        loop {
            let Some(c) = next_signal().await else { return };
            received += 1;
            if received > 1 {
                eprintln!("mailmerge: interrupted again, exiting now");
                std::process::exit(i32::from(c));
            }
            code.store(c, Ordering::SeqCst);
            eprintln!(
                "mailmerge: interrupted: no new messages; finishing the ones in flight \
                 (interrupt again to exit now)"
            );
            cancel.cancel();
        }
    });
    exit
}

/// Waits for SIGINT (→ 130) or SIGTERM (→ 143).
#[cfg(unix)]
async fn next_signal() -> Option<u8> {
    use std::sync::OnceLock;
    use tokio::signal::unix::{Signal, SignalKind, signal};
    use tokio::sync::Mutex;
    static SIGNALS: OnceLock<Option<Mutex<(Signal, Signal)>>> = OnceLock::new();
    let signals = SIGNALS.get_or_init(|| {
        Some(Mutex::new((
            signal(SignalKind::interrupt()).ok()?,
            signal(SignalKind::terminate()).ok()?,
        )))
    });
    let mut guard = signals.as_ref()?.lock().await;
    let (int, term) = &mut *guard;
    tokio::select! {
        _ = int.recv() => Some(130),
        _ = term.recv() => Some(143),
    }
}

/// Waits for Ctrl-C (→ 130).
#[cfg(not(unix))]
async fn next_signal() -> Option<u8> {
    tokio::signal::ctrl_c().await.ok().map(|()| 130)
}
