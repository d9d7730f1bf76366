//! The systemd notify protocol: `READY=1` once the model is loaded and frames flow,
//! `WATCHDOG=1` only from a frame loop that is handling frames, `STATUS=` with rate and
//! latency, `STOPPING=1` on the way out.
//!
//! Messages are datagrams on the unix socket `$NOTIFY_SOCKET` names (sd-notify); without it
//! (not under systemd) every call does nothing. The watchdog interval is
//! `$WATCHDOG_USEC` (`WatchdogSec=` in the unit); pings go out at half of it, and only when
//! [`Notifier::frame_handled`] is called, so a stalled camera or a hung loop stops them and
//! systemd restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends the service's state to systemd.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    last_ping: Option<Duration>,
    ready: bool,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled();
        if enabled {
            log::info!("systemd notify socket set; watchdog {watchdog:?}");
        }
        Notifier { enabled, watchdog, last_ping: None, ready: false }
    }

    fn send(&mut self, state: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        match sd_notify::notify(state) {
            Ok(()) => {}
            // systemd gone or the socket full: nothing to do but note it.
            Err(e) => log::debug!("sd_notify {state:?}: {e}"),
        }
    }

    /// `READY=1` (once).
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    /// A frame went through the loop at `now` (monotonic): pings the watchdog if half its
    /// interval has passed since the last ping.
    pub fn frame_handled(&mut self, now: Duration) {
        let Some(interval) = self.watchdog else { return };
        if self.last_ping.is_none_or(|last| now.saturating_sub(last) >= interval / 2) {
            self.last_ping = Some(now);
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// `STATUS=...`.
    pub fn status(&mut self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }
}
