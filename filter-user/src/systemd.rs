//! systemd's notify protocol (SPEC §8, `Type=notify`): `READY=1` once the
//! restored or initial generation is enforced and the socket is bound,
//! `STATUS=` naming the generation after every change, `STOPPING=1` on
//! shutdown. Each is a no-op when `NOTIFY_SOCKET` is unset.
use sd_notify::NotifyState;

/// The `STATUS=` text for `generation`.
pub fn status_line(generation: Option<u32>) -> String {
    match generation {
        Some(g) => format!("enforcing generation {g}"),
        None => "no generation enforced; waiting for an apply".to_owned(),
    }
}

/// `READY=1` with the status.
pub fn ready(generation: Option<u32>) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(generation)),
    ]);
}

/// `STATUS=` after an apply, a rollback or a detach.
pub fn status(generation: Option<u32>) {
    send(&[NotifyState::Status(&status_line(generation))]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("telling systemd ({states:?}): {e}");
    }
}
