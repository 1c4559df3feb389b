//! The pure plan logic, table-driven: pattern rates at given times, arrival integration, and
//! mix parsing.

use observastack_loadgen::{Endpoint, LoadPlan, Mix, NextArrival, Pattern};

fn check_rate(pattern: Pattern, base: f64, t: f64, expected: f64) {
    let got = pattern.rate(base, t);
    assert!(
        (got - expected).abs() < 1e-9,
        "{pattern:?} from {base} at t={t}: expected {expected}, got {got}"
    );
}

#[test]
fn constant() {
    for t in [0.0, 1.0, 1e6] {
        check_rate(Pattern::Constant, 10.0, t, 10.0);
    }
}

#[test]
fn ramp() {
    let up = Pattern::Ramp {
        to: 110.0,
        duration_s: 10.0,
    };
    let down = Pattern::Ramp {
        to: 0.0,
        duration_s: 4.0,
    };
    for (pattern, base, t, expected) in [
        (&up, 10.0, 0.0, 10.0),
        (&up, 10.0, 2.5, 35.0),
        (&up, 10.0, 5.0, 60.0),
        (&up, 10.0, 10.0, 110.0),
        (&up, 10.0, 20.0, 110.0),
        (&down, 100.0, 1.0, 75.0),
        (&down, 100.0, 4.0, 0.0),
        (&down, 100.0, 9.0, 0.0),
    ] {
        check_rate(pattern.clone(), base, t, expected);
    }
}

#[test]
fn spike() {
    let spike = Pattern::Spike {
        peak: 100.0,
        every_s: 10.0,
        duration_s: 2.0,
    };
    for (t, expected) in [
        (0.0, 100.0),
        (1.9, 100.0),
        (2.0, 5.0),
        (9.99, 5.0),
        (10.0, 100.0),
        (11.0, 100.0),
        (12.5, 5.0),
        (31.0, 100.0),
    ] {
        check_rate(spike.clone(), 5.0, t, expected);
    }
}

#[test]
fn wave() {
    let wave = Pattern::Wave {
        amplitude: 10.0,
        period_s: 4.0,
    };
    let deep = Pattern::Wave {
        amplitude: 50.0,
        period_s: 4.0,
    };
    for (pattern, t, expected) in [
        (&wave, 0.0, 20.0),
        (&wave, 1.0, 30.0),
        (&wave, 2.0, 20.0),
        (&wave, 3.0, 10.0),
        (&wave, 4.0, 20.0),
        (&wave, 0.5, 20.0 + 10.0 * std::f64::consts::FRAC_1_SQRT_2),
        // Never below zero.
        (&deep, 3.0, 0.0),
        (&deep, 1.0, 70.0),
    ] {
        check_rate(pattern.clone(), 20.0, t, expected);
    }
}

#[test]
fn rates_are_clamped_and_paused_is_zero() {
    check_rate(
        Pattern::Wave {
            amplitude: 5000.0,
            period_s: 4.0,
        },
        4000.0,
        1.0,
        5000.0,
    );
    let paused = LoadPlan {
        paused: true,
        ..LoadPlan::default()
    };
    assert_eq!(paused.rate_at(0.0), 0.0);
}

fn plan(rate: f64, pattern: Pattern) -> LoadPlan {
    LoadPlan {
        rate,
        pattern,
        ..LoadPlan::default()
    }
}

fn check_next(plan: &LoadPlan, from: f64, owed: f64, limit: f64, expected: NextArrival) {
    let got = plan.next_arrival(from, owed, limit);
    let close = match (got, expected) {
        (NextArrival::At(a), NextArrival::At(b)) => (a - b).abs() < 0.005,
        (NextArrival::NotBefore { limit: la, owed: oa }, NextArrival::NotBefore { limit: lb, owed: ob }) => {
            (la - lb).abs() < 1e-9 && (oa - ob).abs() < 0.005
        }
        _ => false,
    };
    assert!(
        close,
        "{plan:?} from {from} owing {owed}: expected {expected:?}, got {got:?}"
    );
}

#[test]
fn next_arrival_integrates_the_rate() {
    let half = plan(0.5, Pattern::Constant);
    let hundred = plan(100.0, Pattern::Constant);
    let idle = plan(0.0, Pattern::Constant);
    // ∫0..t of (10·s/10) ds = t²/2 reaches 1 at √2.
    let ramp_from_zero = plan(
        0.0,
        Pattern::Ramp {
            to: 10.0,
            duration_s: 10.0,
        },
    );
    let spikes_only = plan(
        0.0,
        Pattern::Spike {
            peak: 100.0,
            every_s: 10.0,
            duration_s: 1.0,
        },
    );
    for (plan, from, owed, limit, expected) in [
        (&half, 0.0, 1.0, 10.0, NextArrival::At(2.0)),
        (&half, 3.0, 0.5, 10.0, NextArrival::At(4.0)),
        (&half, 0.0, 1.0, 1.0, NextArrival::NotBefore { limit: 1.0, owed: 0.5 }),
        (&hundred, 7.0, 1.0, 8.0, NextArrival::At(7.01)),
        (&hundred, 7.0, 0.0, 8.0, NextArrival::At(7.0)),
        (&idle, 0.0, 1.0, 1.0, NextArrival::NotBefore { limit: 1.0, owed: 1.0 }),
        (&ramp_from_zero, 0.0, 1.0, 5.0, NextArrival::At(2f64.sqrt())),
        (&spikes_only, 1.5, 1.0, 20.0, NextArrival::At(10.01)),
        (
            &spikes_only,
            1.5,
            1.0,
            5.0,
            NextArrival::NotBefore { limit: 5.0, owed: 1.0 },
        ),
    ] {
        check_next(plan, from, owed, limit, expected);
    }
}

/// Walking a wave arrival by arrival sends what its integral says, so patterns do not drift.
#[test]
fn walking_a_pattern_sends_its_integral() {
    let wave = plan(
        50.0,
        Pattern::Wave {
            amplitude: 30.0,
            period_s: 7.0,
        },
    );
    let (mut t, mut owed, mut sent) = (0.0, 1.0, 0u32);
    while t < 20.0 {
        match wave.next_arrival(t, owed, t + 1.0) {
            NextArrival::At(at) if at < 20.0 => {
                sent += 1;
                t = at;
                owed = 1.0;
            }
            NextArrival::At(_) => break,
            NextArrival::NotBefore { limit, owed: left } => {
                t = limit;
                owed = left;
            }
        }
    }
    let expected = wave.arrivals_between(0.0, 20.0);
    assert!(
        (f64::from(sent) - expected).abs() <= 1.5,
        "sent {sent}, integral {expected}"
    );
    // 50/s for 20 s, plus the part of the wave past whole periods.
    assert!((expected - 1000.0).abs() < 60.0, "{expected}");
}

#[test]
fn mix_parsing() {
    let only_browse: Mix = "browse=1".parse().unwrap();
    assert_eq!(only_browse, Mix { browse: 1, ..Mix::ZERO });
    let spaced: Mix = " home = 2 , process=3 ".parse().unwrap();
    assert_eq!(
        spaced,
        Mix {
            home: 2,
            process: 3,
            ..Mix::ZERO
        }
    );
    for (input, field) in [
        ("search=1", "mix.search"),
        ("browse=0", "mix"),
        ("browse=-1", "mix.browse"),
        ("browse", "mix"),
        ("", "mix"),
    ] {
        let error = input.parse::<Mix>().unwrap_err();
        assert_eq!(error.field(), Some(field), "{input:?}: {error}");
    }
}

#[test]
fn mix_picks_by_weight() {
    let mix = Mix {
        home: 1,
        browse: 0,
        order: 2,
        view_order: 0,
        process: 1,
    };
    let picks: Vec<_> = (0..mix.total()).map(|x| mix.pick(x)).collect();
    assert_eq!(
        picks,
        [Endpoint::Home, Endpoint::Order, Endpoint::Order, Endpoint::Process].map(Some)
    );
    assert_eq!(mix.pick(4), None);
}
