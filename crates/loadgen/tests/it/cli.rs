//! The command-line flags turn into the settings they say.

use clap::Parser;
use observastack_loadgen::{LoadgenArgs, Mix, Pattern};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn parse(flags: &[&str]) -> Result<LoadgenArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("loadgen").chain(flags.iter().copied())).map(|c| c.args)
}

#[test]
fn defaults() {
    let args = parse(&[]).unwrap();
    assert_eq!(args.listen.to_string(), "127.0.0.1:8300");
    let settings = args.settings().unwrap();
    assert_eq!(settings.target, "http://127.0.0.1:8000");
    assert_eq!((settings.plan.rate, settings.plan.timeout_ms), (10.0, 5000));
    assert_eq!(settings.plan.pattern, Pattern::Constant);
    assert_eq!(settings.plan.mix, Mix::default());
    assert_eq!(settings.max_in_flight, 2000);
    assert!(!settings.plan.paused);
}

#[test]
fn patterns_and_mix_from_flags() {
    let args = parse(&[
        "--rate",
        "5",
        "--pattern",
        "spike",
        "--spike-peak",
        "300",
        "--spike-every-s",
        "30",
        "--spike-duration-s",
        "3",
        "--mix",
        "browse=5,order=2",
        "--paused",
    ])
    .unwrap();
    let plan = args.settings().unwrap().plan;
    assert_eq!(
        plan.pattern,
        Pattern::Spike {
            peak: 300.0,
            every_s: 30.0,
            duration_s: 3.0
        }
    );
    assert_eq!(
        plan.mix,
        Mix {
            browse: 5,
            order: 2,
            ..Mix::ZERO
        }
    );
    assert!(plan.paused);
}

#[test]
fn bad_flags_are_refused() {
    assert!(parse(&["--mix", "browse=0"]).is_err());
    assert!(parse(&["--pattern", "zigzag"]).is_err());
    let error = parse(&["--rate=-3"]).unwrap().settings().unwrap_err();
    assert!(format!("{error:#}").contains("rate"), "{error:#}");
}
