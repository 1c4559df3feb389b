//! The load plan: how many users arrive per second, how that rate moves over time, and what they
//! ask for.
//!
//! Everything here is pure: the rate a plan asks for at a time, the time the next arrival is due
//! (by integrating the rate), and the validation of a control-API update. The scheduler and the
//! HTTP handlers call into it; nothing here knows about sockets or clocks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The highest rate, in requests per second, a plan may ask for; the effective rate of every
/// pattern is clamped to it.
pub const MAX_RATE: f64 = 5000.0;

/// The longest request timeout a plan may set, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The longest duration or period a pattern may have, in seconds (one day).
pub const MAX_PATTERN_S: f64 = 86_400.0;

/// The plan the simulated users follow. It can be replaced or patched at run time through the
/// control API; the scheduler picks up a change at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadPlan {
    /// Base arrival rate in requests per second, `0..=5000`.
    pub rate: f64,
    /// How the rate moves over time, starting from `rate`.
    pub pattern: Pattern,
    /// Relative weights of the endpoints.
    pub mix: Mix,
    /// When true, no request is sent.
    pub paused: bool,
    /// How long a user waits for an answer before giving up, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self {
            rate: 10.0,
            pattern: Pattern::Constant,
            mix: Mix::default(),
            paused: false,
            timeout_ms: 5000,
        }
    }
}

/// How the arrival rate moves over time. `t` is the time since the rate or the pattern last
/// changed (changing only the mix, the timeout or pausing does not restart a pattern).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// The base rate, always.
    Constant,
    /// Linear from the base rate to `to` over `duration_s`, then holds `to`.
    Ramp {
        /// The rate reached at the end of the ramp.
        to: f64,
        /// How long the ramp takes, in seconds.
        duration_s: f64,
    },
    /// The base rate, with `peak` for the first `duration_s` of every `every_s` (so a spike
    /// starts as soon as the pattern is set: immediate feedback for whoever set it).
    Spike {
        /// The rate during a spike.
        peak: f64,
        /// The period of the spikes, in seconds.
        every_s: f64,
        /// How long each spike lasts, in seconds.
        duration_s: f64,
    },
    /// `rate + amplitude·sin(2πt/period_s)`, never below zero.
    Wave {
        /// How far the rate swings above and below the base rate.
        amplitude: f64,
        /// The period of one swing, in seconds.
        period_s: f64,
    },
}

impl Pattern {
    /// The pattern kinds as the control API and the command line spell them.
    pub const KINDS: [&'static str; 4] = ["constant", "ramp", "spike", "wave"];

    /// The rate this pattern asks for `t` seconds after it was set, from the base rate `base`,
    /// clamped to `0..=MAX_RATE`.
    pub fn rate(&self, base: f64, t: f64) -> f64 {
        let t = t.max(0.0);
        let raw = match *self {
            Pattern::Constant => base,
            Pattern::Ramp { to, duration_s } => {
                if t >= duration_s || duration_s <= 0.0 {
                    to
                } else {
                    base + (to - base) * (t / duration_s)
                }
            }
            Pattern::Spike {
                peak,
                every_s,
                duration_s,
            } => {
                if every_s > 0.0 && t % every_s < duration_s {
                    peak
                } else {
                    base
                }
            }
            Pattern::Wave { amplitude, period_s } => {
                if period_s > 0.0 {
                    base + amplitude * (std::f64::consts::TAU * t / period_s).sin()
                } else {
                    base
                }
            }
        };
        if raw.is_finite() { raw.clamp(0.0, MAX_RATE) } else { 0.0 }
    }

    /// The highest rate this pattern can ask for from base rate `base`; zero means it will never
    /// send anything, so the scheduler can sleep until the plan changes.
    pub fn max_rate(&self, base: f64) -> f64 {
        let raw = match *self {
            Pattern::Constant => base,
            Pattern::Ramp { to, .. } => base.max(to),
            Pattern::Spike { peak, .. } => base.max(peak),
            Pattern::Wave { amplitude, .. } => base + amplitude.abs(),
        };
        if raw.is_finite() { raw.clamp(0.0, MAX_RATE) } else { 0.0 }
    }
}

/// The endpoints of the shop a simulated user calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /`, the HTML home page.
    Home,
    /// `GET /api/products`.
    Browse,
    /// `POST /api/orders` with a random basket.
    Order,
    /// `GET /api/orders/{id}` for a recently created order (or a seeded one).
    ViewOrder,
    /// `POST /api/process`, CPU work on the server.
    Process,
}

impl Endpoint {
    /// Every endpoint, in the order of [`Mix`]'s fields.
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Home,
        Endpoint::Browse,
        Endpoint::Order,
        Endpoint::ViewOrder,
        Endpoint::Process,
    ];

    /// The name used as the `endpoint` label and in the mix.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Home => "home",
            Endpoint::Browse => "browse",
            Endpoint::Order => "order",
            Endpoint::ViewOrder => "view_order",
            Endpoint::Process => "process",
        }
    }

    /// The endpoint with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relative weights of the endpoints in the request mix. All zero is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    /// Weight of `GET /`.
    pub home: u32,
    /// Weight of `GET /api/products`.
    pub browse: u32,
    /// Weight of `POST /api/orders`.
    pub order: u32,
    /// Weight of `GET /api/orders/{id}`.
    pub view_order: u32,
    /// Weight of `POST /api/process`.
    pub process: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            home: 1,
            browse: 5,
            order: 2,
            view_order: 2,
            process: 1,
        }
    }
}

impl Mix {
    /// A mix with every weight zero (invalid on its own; the base of a whole-mix update).
    pub const ZERO: Mix = Mix {
        home: 0,
        browse: 0,
        order: 0,
        view_order: 0,
        process: 0,
    };

    /// The weight of `endpoint`.
    pub fn weight(&self, endpoint: Endpoint) -> u32 {
        match endpoint {
            Endpoint::Home => self.home,
            Endpoint::Browse => self.browse,
            Endpoint::Order => self.order,
            Endpoint::ViewOrder => self.view_order,
            Endpoint::Process => self.process,
        }
    }

    /// Sets the weight of `endpoint`.
    pub fn set_weight(&mut self, endpoint: Endpoint, weight: u32) {
        match endpoint {
            Endpoint::Home => self.home = weight,
            Endpoint::Browse => self.browse = weight,
            Endpoint::Order => self.order = weight,
            Endpoint::ViewOrder => self.view_order = weight,
            Endpoint::Process => self.process = weight,
        }
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        Endpoint::ALL.iter().map(|e| u64::from(self.weight(*e))).sum()
    }

    /// The endpoint a draw `x` in `0..total()` lands on; `None` when every weight is zero.
    pub fn pick(&self, x: u64) -> Option<Endpoint> {
        let mut acc = 0u64;
        for endpoint in Endpoint::ALL {
            acc += u64::from(self.weight(endpoint));
            if x < acc {
                return Some(endpoint);
            }
        }
        None
    }

    /// A random endpoint, drawn by weight.
    pub fn sample(&self) -> Option<Endpoint> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        self.pick(fastrand::u64(0..total))
    }
}

/// Parses `browse=5,order=2`; endpoints not named get weight zero, so `browse=1` sends only
/// `browse`.
impl FromStr for Mix {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix::ZERO;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| PlanError::Invalid {
                field: "mix".to_owned(),
                message: format!("expected name=weight, found {part:?}"),
            })?;
            let name = name.trim();
            let endpoint = Endpoint::from_name(name).ok_or_else(|| unknown_endpoint(&format!("mix.{name}")))?;
            let weight = weight.trim().parse::<u32>().map_err(|_| PlanError::Invalid {
                field: format!("mix.{name}"),
                message: format!("expected a whole number from 0 to {}, found {weight:?}", u32::MAX),
            })?;
            mix.set_weight(endpoint, weight);
        }
        check_mix(&mix)?;
        Ok(mix)
    }
}

fn unknown_endpoint(field: &str) -> PlanError {
    PlanError::Invalid {
        field: field.to_owned(),
        message: format!(
            "unknown endpoint; the endpoints are: {}",
            Endpoint::ALL.map(Endpoint::as_str).join(", ")
        ),
    }
}

/// Why a plan or an update of it was rejected. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The body was not a JSON object.
    #[error("the plan must be a JSON object, found {found}")]
    NotAnObject {
        /// What was sent instead.
        found: String,
    },
    /// One field is unknown or has a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field, dotted for nested ones (`pattern.to`, `mix.browse`).
        field: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl PlanError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            PlanError::NotAnObject { .. } => None,
            PlanError::Invalid { field, .. } => Some(field),
        }
    }
}

/// How an update combines with the current plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PATCH`: only the given fields change; a given `mix` changes only the weights it names.
    Merge,
    /// `PUT`: the body is the whole plan; absent fields take their defaults and endpoints absent
    /// from a given `mix` get weight zero.
    Replace,
}

fn invalid(field: &str, expected: &str, found: &Value) -> PlanError {
    PlanError::Invalid {
        field: field.to_owned(),
        message: format!("expected {expected}, found {}", describe(found)),
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn check_range(field: &str, value: f64, min: f64, max: f64, min_exclusive: bool) -> Result<(), PlanError> {
    let above_min = if min_exclusive { value > min } else { value >= min };
    if value.is_finite() && above_min && value <= max {
        Ok(())
    } else {
        let lower = if min_exclusive { "more than" } else { "at least" };
        Err(PlanError::Invalid {
            field: field.to_owned(),
            message: format!("expected a number {lower} {min} and at most {max}, found {value}"),
        })
    }
}

fn check_mix(mix: &Mix) -> Result<(), PlanError> {
    if mix.total() == 0 {
        return Err(PlanError::Invalid {
            field: "mix".to_owned(),
            message: "at least one endpoint needs a weight above zero".to_owned(),
        });
    }
    Ok(())
}

impl LoadPlan {
    /// The rate the plan asks for `t` seconds after its rate or pattern was set (zero when
    /// paused).
    pub fn rate_at(&self, t: f64) -> f64 {
        if self.paused {
            0.0
        } else {
            self.pattern.rate(self.rate, t)
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), PlanError> {
        check_range("rate", self.rate, 0.0, MAX_RATE, false)?;
        match self.pattern {
            Pattern::Constant => {}
            Pattern::Ramp { to, duration_s } => {
                check_range("pattern.to", to, 0.0, MAX_RATE, false)?;
                check_range("pattern.duration_s", duration_s, 0.0, MAX_PATTERN_S, true)?;
            }
            Pattern::Spike {
                peak,
                every_s,
                duration_s,
            } => {
                check_range("pattern.peak", peak, 0.0, MAX_RATE, false)?;
                check_range("pattern.every_s", every_s, 0.0, MAX_PATTERN_S, true)?;
                check_range("pattern.duration_s", duration_s, 0.0, every_s, true)?;
            }
            Pattern::Wave { amplitude, period_s } => {
                check_range("pattern.amplitude", amplitude, 0.0, MAX_RATE, false)?;
                check_range("pattern.period_s", period_s, 0.0, MAX_PATTERN_S, true)?;
            }
        }
        check_mix(&self.mix)?;
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(PlanError::Invalid {
                field: "timeout_ms".to_owned(),
                message: format!(
                    "expected a whole number from 1 to {MAX_TIMEOUT_MS}, found {}",
                    self.timeout_ms
                ),
            });
        }
        Ok(())
    }

    /// The plan an update (a JSON object of some or all fields) turns this one into, validated
    /// whole. On error nothing is applied and the error names the field.
    pub fn updated(&self, update: &Value, mode: UpdateMode) -> Result<LoadPlan, PlanError> {
        let Value::Object(fields) = update else {
            return Err(PlanError::NotAnObject {
                found: describe(update),
            });
        };
        let mut next = match mode {
            UpdateMode::Merge => self.clone(),
            UpdateMode::Replace => LoadPlan::default(),
        };
        for (name, value) in fields {
            match name.as_str() {
                "rate" => next.rate = value.as_f64().ok_or_else(|| invalid("rate", "a number", value))?,
                "pattern" => next.pattern = parse_pattern(value)?,
                "mix" => {
                    let base = match mode {
                        UpdateMode::Merge => next.mix,
                        UpdateMode::Replace => Mix::ZERO,
                    };
                    next.mix = merge_mix(base, value)?;
                }
                "paused" => {
                    next.paused = value
                        .as_bool()
                        .ok_or_else(|| invalid("paused", "true or false", value))?
                }
                "timeout_ms" => {
                    next.timeout_ms = value
                        .as_u64()
                        .ok_or_else(|| invalid("timeout_ms", "a whole number of milliseconds", value))?;
                }
                other => {
                    return Err(PlanError::Invalid {
                        field: other.to_owned(),
                        message: "unknown field; the fields are: rate, pattern, mix, paused, timeout_ms".to_owned(),
                    });
                }
            }
        }
        next.validate()?;
        Ok(next)
    }

    /// Whether going from `self` to `next` restarts the pattern clock (the rate or the pattern
    /// changed).
    pub fn restarts_pattern(&self, next: &LoadPlan) -> bool {
        self.rate != next.rate || self.pattern != next.pattern
    }
}

fn parse_pattern(value: &Value) -> Result<Pattern, PlanError> {
    let Value::Object(fields) = value else {
        return Err(invalid("pattern", "an object with a \"kind\"", value));
    };
    match fields.get("kind") {
        Some(Value::String(kind)) if Pattern::KINDS.contains(&kind.as_str()) => {}
        Some(other) => {
            return Err(invalid(
                "pattern.kind",
                &format!("one of {}", Pattern::KINDS.join(", ")),
                other,
            ));
        }
        None => {
            return Err(PlanError::Invalid {
                field: "pattern.kind".to_owned(),
                message: format!("missing; expected one of {}", Pattern::KINDS.join(", ")),
            });
        }
    }
    serde_json::from_value(value.clone()).map_err(|e| PlanError::Invalid {
        field: "pattern".to_owned(),
        message: e.to_string(),
    })
}

fn merge_mix(mut mix: Mix, value: &Value) -> Result<Mix, PlanError> {
    let Value::Object(weights) = value else {
        return Err(invalid("mix", "an object of endpoint weights", value));
    };
    for (name, weight) in weights {
        let field = format!("mix.{name}");
        let endpoint = Endpoint::from_name(name).ok_or_else(|| unknown_endpoint(&field))?;
        let weight = weight
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .ok_or_else(|| invalid(&field, &format!("a whole number from 0 to {}", u32::MAX), weight))?;
        mix.set_weight(endpoint, weight);
    }
    Ok(mix)
}

/// Upper bound of one integration step, in seconds: fine enough that a spike edge or a wave is
/// followed to within a few milliseconds.
const MAX_STEP_S: f64 = 0.005;

/// Below this much of an arrival left, the arrival is due (guards against endless tiny steps
/// from rounding).
const EPSILON: f64 = 1e-9;

/// The outcome of looking for the next arrival up to a time limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextArrival {
    /// The next arrival is due at this time (seconds on the plan's clock).
    At(f64),
    /// No arrival before the limit; this much of one is still owed when the limit is reached.
    NotBefore {
        /// The limit that was reached.
        limit: f64,
        /// The part of an arrival still owed at `limit`, in `(0, 1]`.
        owed: f64,
    },
}

impl LoadPlan {
    /// The time of the next arrival: the first `t` after `from` at which the integral of the rate
    /// from `from` reaches `owed` (one whole arrival, or what remained of one), searched up to
    /// `limit`. Integrating (midpoint rule, steps of at most 5 ms) rather than taking `1/rate`
    /// makes rates like 0.5/s and fast-moving patterns come out right.
    pub fn next_arrival(&self, from: f64, owed: f64, limit: f64) -> NextArrival {
        let mut t = from;
        let mut owed = owed;
        while owed > EPSILON && t < limit {
            let room = (limit - t).min(MAX_STEP_S);
            let r0 = self.rate_at(t);
            let step = if r0 > 0.0 { (owed / r0).min(room) } else { room };
            let r = self.rate_at(t + step / 2.0);
            let area = r * step;
            if r > 0.0 && area >= owed - EPSILON {
                return NextArrival::At(t + (owed / r).min(step));
            }
            owed -= area;
            t += step;
        }
        if owed <= EPSILON {
            NextArrival::At(t)
        } else {
            NextArrival::NotBefore { limit, owed }
        }
    }

    /// The expected number of arrivals between `from` and `to` (seconds on the plan's clock).
    pub fn arrivals_between(&self, from: f64, to: f64) -> f64 {
        let mut t = from;
        let mut total = 0.0;
        while t < to {
            let step = (to - t).min(MAX_STEP_S);
            total += self.rate_at(t + step / 2.0) * step;
            t += step;
        }
        total
    }
}

/// Builds a JSON object from the plan (for the control API), never failing.
pub(crate) fn plan_json(plan: &LoadPlan) -> Value {
    serde_json::to_value(plan).unwrap_or_else(|_| Value::Object(Map::new()))
}
