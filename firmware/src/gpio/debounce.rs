//! Software debouncing of a trigger input.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::GpioError;

/// Which debounced transition of the *physical* trigger line fires a trigger.
///
/// `Rising`: the line settled high. `Falling`: the line settled low. `Both`: either (a press and its
/// release are two triggers). Whether that transition is a press or a release depends on
/// [`TriggerConfig::active_low`]; see the [module documentation](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Edge {
    /// Low → high.
    Rising,
    /// High → low.
    Falling,
    /// Either direction.
    Both,
}

impl Edge {
    /// The configuration spelling: `"rising"`, `"falling"` or `"both"`.
    pub const fn name(self) -> &'static str {
        match self {
            Edge::Rising => "rising",
            Edge::Falling => "falling",
            Edge::Both => "both",
        }
    }

    /// Whether a debounced transition that leaves the physical line at `physical_high` fires.
    pub const fn fires_when_settled(self, physical_high: bool) -> bool {
        match self {
            Edge::Rising => physical_high,
            Edge::Falling => !physical_high,
            Edge::Both => true,
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Edge {
    type Err = GpioError;

    /// Parses `rising`, `falling` or `both` (ASCII case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        [Edge::Rising, Edge::Falling, Edge::Both]
            .into_iter()
            .find(|e| t.eq_ignore_ascii_case(e.name()))
            .ok_or_else(|| GpioError::Parse {
                what: "GPIO edge",
                value: s.to_owned(),
                expected: "rising, falling or both",
            })
    }
}

/// How a trigger input is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerConfig {
    /// Which debounced transition(s) of the physical line fire.
    pub edge: Edge,
    /// The line is asserted (active, "pressed") when physically low.
    pub active_low: bool,
    /// How long a level must stay unchanged before it counts; zero = every level change counts at once.
    pub debounce: Duration,
}

impl TriggerConfig {
    /// The active (asserted) state for a physical level.
    pub const fn is_active(&self, physical_high: bool) -> bool {
        physical_high != self.active_low
    }

    /// Whether the debounced transition to `active` (true: to active, false: to inactive) fires.
    pub const fn fires_on(&self, active: bool) -> bool {
        // The physical level after the transition: active is low when active_low.
        self.edge.fires_when_settled(active != self.active_low)
    }
}

impl fmt::Display for TriggerConfig {
    /// E.g. `edge falling, active low, debounce 20ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let active = if self.active_low { "low" } else { "high" };
        write!(f, "edge {}, active {active}, debounce {:?}", self.edge, self.debounce)
    }
}

/// A debounced trigger, reported once per debounced transition selected by [`Edge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Press {
    /// When the transition began: the first edge of it (the first active edge of a press), before
    /// any contact bounce.
    pub began_at: Duration,
    /// When it was confirmed: the last edge of it plus the debounce time.
    pub confirmed_at: Duration,
    /// The state the line settled in: `true` = became active (a press), `false` = became inactive (a
    /// release; reported only when [`Edge`] selects that physical transition).
    pub active: bool,
}

/// Software debounce state machine for one input line.
///
/// Feed it every level change ([`edge`](Self::edge), with the time it happened) and, when no change
/// arrives, the passage of time ([`poll`](Self::poll); [`next_deadline`](Self::next_deadline) says when
/// that is worth doing). Semantics:
///
/// - A level counts (the debounced level changes) once the line has stayed at it for `debounce` since
///   its last change. Contact bounce shorter than `debounce` therefore yields one transition, and a
///   spike shorter than `debounce` yields none.
/// - Each debounced transition is reported at most once, as a [`Press`] if the [`TriggerConfig`]
///   selects it. A long press is one transition: it fires once, however long it is held or however
///   often it is polled. The next press can only count after the release has counted, i.e. after the
///   line was inactive for `debounce`.
/// - `debounce == 0`: every change of level counts at once.
/// - The level at construction is the starting debounced level; it fires nothing (a button held while
///   the daemon starts fires after it is released and pressed again).
///
/// Times must come from one timeline. A time earlier than one already seen is treated as that later
/// time. [`edge`](Self::edge) also accepts samples: a repeated level is not a change.
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce: Duration,
    on_activate: bool,
    on_release: bool,
    /// The debounced level.
    stable: bool,
    /// The last level seen.
    raw: bool,
    /// When `raw` last changed.
    raw_since: Duration,
    /// First edge away from `stable` of the transition in progress.
    began_at: Option<Duration>,
    /// Latest time seen, to keep time monotonic.
    last_at: Duration,
}

impl Debouncer {
    /// A debouncer whose line is at `initial_active` (debounced already) at time `at`.
    pub fn new(config: &TriggerConfig, initial_active: bool, at: Duration) -> Self {
        Self {
            debounce: config.debounce,
            on_activate: config.fires_on(true),
            on_release: config.fires_on(false),
            stable: initial_active,
            raw: initial_active,
            raw_since: at,
            began_at: None,
            last_at: at,
        }
    }

    /// The line was seen at `active` at time `at` (an edge, or a sample of the level).
    ///
    /// Returns the press that this observation completes, if any: a transition that had been stable
    /// for `debounce` before `at` (if [`poll`](Self::poll) was not called in time), or, with zero
    /// debounce, this very change.
    pub fn edge(&mut self, at: Duration, active: bool) -> Option<Press> {
        let at = self.advance_to(at);
        let settled = self.settle(at);
        if active != self.raw {
            self.raw = active;
            self.raw_since = at;
            if active != self.stable && self.began_at.is_none() {
                self.began_at = Some(at);
            }
            if self.debounce.is_zero() {
                // settled is None here: with zero debounce every change settles at once, so the
                // previous level was already the debounced one.
                return settled.or_else(|| self.settle(at));
            }
        }
        settled
    }

    /// Time has reached `now` without a level change being reported; returns the press that became
    /// stable by then, if any.
    pub fn poll(&mut self, now: Duration) -> Option<Press> {
        let now = self.advance_to(now);
        self.settle(now)
    }

    /// When a pending level change will have been stable for `debounce`, if one is pending. Calling
    /// [`poll`](Self::poll) at that time (or later) reports it.
    pub fn next_deadline(&self) -> Option<Duration> {
        (self.raw != self.stable).then(|| self.raw_since.saturating_add(self.debounce))
    }

    /// The last level seen (not debounced).
    pub fn level(&self) -> bool {
        self.raw
    }

    /// The debounced level.
    pub fn debounced(&self) -> bool {
        self.stable
    }

    fn advance_to(&mut self, at: Duration) -> Duration {
        self.last_at = self.last_at.max(at);
        self.last_at
    }

    /// Confirms `raw` as the debounced level if it has been held for `debounce` by `now`.
    fn settle(&mut self, now: Duration) -> Option<Press> {
        let confirmed_at = self.raw_since.saturating_add(self.debounce);
        if now < confirmed_at {
            return None;
        }
        let began_at = self.began_at.take();
        if self.raw == self.stable {
            // Back at the debounced level for long enough: whatever bounced before is over.
            return None;
        }
        self.stable = self.raw;
        let fires = if self.stable { self.on_activate } else { self.on_release };
        fires.then(|| Press {
            began_at: began_at.unwrap_or(self.raw_since),
            confirmed_at,
            active: self.stable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(edge: Edge, active_low: bool, debounce_ms: u64) -> TriggerConfig {
        TriggerConfig { edge, active_low, debounce: ms(debounce_ms) }
    }

    /// A press-only debouncer (active_low = false, rising) starting inactive at 0.
    fn presses(debounce_ms: u64) -> Debouncer {
        Debouncer::new(&config(Edge::Rising, false, debounce_ms), false, Duration::ZERO)
    }

    fn press(began: u64, confirmed: u64) -> Press {
        Press { began_at: ms(began), confirmed_at: ms(confirmed), active: true }
    }

    /// Feeds `(time_ms, active)` edges, polling every millisecond between them and for `tail_ms` after
    /// the last one; returns every press.
    fn run(d: &mut Debouncer, edges: &[(u64, bool)], tail_ms: u64) -> Vec<Press> {
        let mut out = Vec::new();
        let end = edges.last().map_or(0, |e| e.0) + tail_ms;
        let mut next = edges.iter().peekable();
        for t in 0..=end {
            while let Some(&&(at, active)) = next.peek() {
                if at != t {
                    break;
                }
                out.extend(d.edge(ms(at), active));
                next.next();
            }
            out.extend(d.poll(ms(t)));
        }
        out
    }

    #[test]
    fn edge_parses_and_prints() {
        assert_eq!("rising".parse::<Edge>().unwrap(), Edge::Rising);
        assert_eq!(" Falling ".parse::<Edge>().unwrap(), Edge::Falling);
        assert_eq!("BOTH".parse::<Edge>().unwrap(), Edge::Both);
        let err = "up".parse::<Edge>().unwrap_err();
        assert_eq!(err.to_string(), "invalid GPIO edge \"up\": expected rising, falling or both");
        assert_eq!(Edge::Falling.to_string(), "falling");
    }

    #[test]
    fn trigger_config_maps_edges_through_active_low() {
        // Button to ground with pull-up: active low; the press is the falling edge.
        let c = config(Edge::Falling, true, 20);
        assert!(c.is_active(false) && !c.is_active(true));
        assert!(c.fires_on(true) && !c.fires_on(false));
        let c = config(Edge::Rising, true, 20);
        assert!(!c.fires_on(true) && c.fires_on(false));
        let c = config(Edge::Rising, false, 20);
        assert!(c.is_active(true));
        assert!(c.fires_on(true) && !c.fires_on(false));
        let c = config(Edge::Both, true, 20);
        assert!(c.fires_on(true) && c.fires_on(false));
        assert_eq!(c.to_string(), "edge both, active low, debounce 20ms");
    }

    #[test]
    fn contact_bounce_fires_one_press_stamped_at_the_first_edge() {
        let mut d = presses(20);
        let edges = [(100, true), (101, false), (103, true), (104, false), (106, true)];
        assert_eq!(run(&mut d, &edges, 500), [press(100, 126)]);
        assert!(d.debounced());
    }

    #[test]
    fn the_press_fires_exactly_when_stable_for_debounce() {
        let mut d = presses(20);
        assert_eq!(d.edge(ms(100), true), None);
        assert_eq!(d.next_deadline(), Some(ms(120)));
        assert_eq!(d.poll(ms(119)), None);
        assert_eq!(d.poll(ms(120)), Some(press(100, 120)));
        assert_eq!(d.poll(ms(121)), None);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn spike_shorter_than_debounce_fires_nothing() {
        let mut d = presses(20);
        assert_eq!(run(&mut d, &[(100, true), (119, false)], 500), []);
        assert!(!d.debounced());
        // A real press afterwards is stamped with its own first edge, not the spike's.
        // (`run` polled up to 619 ms.)
        assert_eq!(run(&mut d, &[(700, true)], 100), [press(700, 720)]);
    }

    #[test]
    fn long_press_polled_for_seconds_fires_once() {
        let mut d = presses(20);
        let mut fired = Vec::new();
        fired.extend(d.edge(ms(10), true));
        for t in (10..10_000).step_by(3) {
            fired.extend(d.poll(ms(t)));
            fired.extend(d.edge(ms(t), true)); // samples of the same level change nothing
        }
        assert_eq!(fired, [press(10, 30)]);
    }

    #[test]
    fn press_release_press_fires_twice() {
        let mut d = presses(20);
        let edges =
            [(100, true), (102, false), (103, true), (400, false), (401, true), (402, false), (700, true)];
        assert_eq!(run(&mut d, &edges, 100), [press(100, 123), press(700, 720)]);
    }

    #[test]
    fn no_re_arm_before_release_is_stable() {
        let mut d = presses(20);
        // Released at 400 for only 15 ms: the release never counted, so 415 is not a second press.
        let edges = [(100, true), (400, false), (415, true)];
        assert_eq!(run(&mut d, &edges, 500), [press(100, 120)]);
    }

    #[test]
    fn edges_without_polls_still_confirm_earlier_presses() {
        // An event reader that was busy: the release arrives long after the press was stable.
        let mut d = presses(20);
        assert_eq!(d.edge(ms(100), true), None);
        assert_eq!(d.edge(ms(500), false), Some(press(100, 120)));
        assert_eq!(d.edge(ms(900), true), None); // the release at 500 counted at 520
        assert_eq!(d.poll(ms(920)), Some(press(900, 920)));
    }

    #[test]
    fn active_low_inverts_the_physical_level() {
        // Active low, falling: the press is the line going low.
        let cfg = config(Edge::Falling, true, 20);
        let mut d = Debouncer::new(&cfg, cfg.is_active(true), Duration::ZERO);
        assert!(!d.debounced());
        let low = cfg.is_active(false);
        let high = cfg.is_active(true);
        let edges = [(100, low), (101, high), (102, low), (300, high), (600, low)];
        assert_eq!(run(&mut d, &edges, 100), [press(100, 122), press(600, 620)]);
        // The same line with active_low = false sees the low level as inactive: going low is a
        // release, which a rising trigger ignores; it fires when the line goes high again.
        let cfg = config(Edge::Rising, false, 20);
        let mut d = Debouncer::new(&cfg, cfg.is_active(true), Duration::ZERO);
        let (low, high) = (cfg.is_active(false), cfg.is_active(true));
        let edges = [(100, low), (101, high), (102, low), (300, high), (600, low)];
        assert_eq!(run(&mut d, &edges, 100), [press(300, 320)]);
    }

    #[test]
    fn edge_rising_falling_both_select_transitions() {
        // The same physical waveform (active_low = false): high 100..300 with bounce, low after.
        let edges = [(100, true), (101, false), (102, true), (300, false), (301, true), (302, false)];
        let release =
            |began, confirmed| Press { began_at: ms(began), confirmed_at: ms(confirmed), active: false };

        let mut d = Debouncer::new(&config(Edge::Rising, false, 20), false, Duration::ZERO);
        assert_eq!(run(&mut d, &edges, 100), [press(100, 122)]);

        let mut d = Debouncer::new(&config(Edge::Falling, false, 20), false, Duration::ZERO);
        assert_eq!(run(&mut d, &edges, 100), [release(300, 322)]);

        let mut d = Debouncer::new(&config(Edge::Both, false, 20), false, Duration::ZERO);
        assert_eq!(run(&mut d, &edges, 100), [press(100, 122), release(300, 322)]);

        // With active_low the same physical waveform is release-then-press: rising fires on the
        // line going high, which is now a release.
        let mut d = Debouncer::new(&config(Edge::Rising, true, 20), true, Duration::ZERO);
        let inverted: Vec<(u64, bool)> = edges.iter().map(|&(t, high)| (t, !high)).collect();
        assert_eq!(run(&mut d, &inverted, 100), [release(100, 122)]);
    }

    #[test]
    fn zero_debounce_fires_on_the_first_edge() {
        let mut d = presses(0);
        assert_eq!(d.edge(ms(100), true), Some(press(100, 100)));
        assert_eq!(d.next_deadline(), None);
        assert_eq!(d.edge(ms(100), true), None);
        assert_eq!(d.poll(ms(5000)), None);
        assert_eq!(d.edge(ms(5001), false), None);
        assert_eq!(d.edge(ms(5001), true), Some(press(5001, 5001)));
    }

    #[test]
    fn initial_active_level_fires_nothing_until_released_and_pressed() {
        let mut d = Debouncer::new(&config(Edge::Rising, false, 20), true, ms(5));
        assert_eq!(run(&mut d, &[], 1000), []);
        let edges = [(1000, false), (1100, true)];
        assert_eq!(run(&mut d, &edges, 100), [press(1100, 1120)]);
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let mut d = presses(20);
        assert_eq!(d.poll(ms(500)), None);
        // An edge stamped before the last poll is taken as happening at 500.
        assert_eq!(d.edge(ms(450), true), None);
        assert_eq!(d.next_deadline(), Some(ms(520)));
        assert_eq!(d.poll(ms(519)), None);
        assert_eq!(d.poll(ms(520)), Some(press(500, 520)));
    }
}
