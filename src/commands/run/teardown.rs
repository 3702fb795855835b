//! Stage 7 of `run`: teardown — report what the relay masked, stop the
//! services (sockets removed, held values wiped), record the end.

use std::sync::{Arc, Mutex};

use crate::audit::{Auditor, Event, EventKind};
use crate::redact::live::log_counts;
use crate::redact::Counts;
use crate::supervise::ChildExit;

use super::services::Service;

/// Everything after the last child ended; returns keywarden's exit code.
pub(super) fn teardown(
    audit: &Auditor,
    counts: &Arc<Mutex<Counts>>,
    services: Vec<Box<dyn Service>>,
    exit: ChildExit,
) -> u8 {
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    log_counts(&counts);
    audit.note(
        Event::new(EventKind::RedactionCounts)
            .counts(counts.iter().map(|(k, v)| (k.to_string(), v)).collect()),
    );
    for s in services {
        s.stop();
    }
    audit.note(Event::new(EventKind::RunStop).status(i64::from(exit.exit_code())));
    exit.exit_code()
}
