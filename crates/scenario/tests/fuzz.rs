//! `check` never panics, whatever the text: random YAML-ish text and mutations of valid files
//! (deleted spans, inserted snippets, replaced lines) all come back as a result.

mod common;

use observastack_scenario::{check, library};
use proptest::prelude::*;

const MINIMAL: &str = include_str!("good/minimal.yaml");

/// Pieces of scenario files and YAML tricks to splice in.
const SNIPPETS: &[&str] = &[
    "",
    "\n",
    ": ",
    "- ",
    "  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "? ",
    "|\n  ",
    ">-\n  ",
    "\"",
    "'",
    "#",
    "~",
    "null",
    "-1",
    "1e400",
    ".nan",
    "0x1F",
    "18446744073709551616",
    "at: ",
    "after: ",
    "for: 0s",
    "for: 99999999999h",
    "comparator: between",
    "range: [1]",
    "threshold: .inf",
    "query: sum(",
    "query: \"a{b=~\\\"[\\\"}\"",
    "service: orders",
    "values: {x: 1}",
    "process: {name: orders, command: signal}",
    "deploy: {service: orders, version: \"\"}",
    "load: {rate: -1}",
    "time_limit: 0s",
    "verify: {time_scale: .nan}",
    "guide: ../x.md",
    "é",
    "\u{feff}",
    "\u{0}",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "<<: *a\n",
];

fn splice(base: &str, at: usize, cut: usize, insert: &str) -> String {
    let chars: Vec<char> = base.chars().collect();
    let at = at % (chars.len() + 1);
    let end = (at + cut).min(chars.len());
    let mut out: String = chars[..at].iter().collect();
    out.push_str(insert);
    out.extend(&chars[end..]);
    out
}

fn assert_no_panic(text: &str) {
    let sut = common::sut();
    if let Err(diagnostics) = check("fuzz.yaml", text, &sut) {
        assert!(!diagnostics.is_empty());
        for d in diagnostics {
            assert!(d.to_string().starts_with("fuzz.yaml:"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in "[ -~\\n\\t:\\-\\[\\]{}&*!|>'\"#é]{0,400}") {
        assert_no_panic(&text);
    }

    #[test]
    fn mutated_minimal_never_panics(
        edits in prop::collection::vec((any::<usize>(), 0usize..40, prop::sample::select(SNIPPETS)), 1..6)
    ) {
        let mut text = MINIMAL.to_owned();
        for (at, cut, insert) in edits {
            text = splice(&text, at, cut, insert);
        }
        assert_no_panic(&text);
    }

    #[test]
    fn mutated_library_never_panics(
        which in any::<usize>(),
        edits in prop::collection::vec((any::<usize>(), 0usize..80, prop::sample::select(SNIPPETS)), 1..6)
    ) {
        let files: Vec<&str> = library::scenarios().map(|(_, text)| text).collect();
        let mut text = files[which % files.len()].to_owned();
        for (at, cut, insert) in edits {
            text = splice(&text, at, cut, insert);
        }
        assert_no_panic(&text);
    }

    #[test]
    fn replaced_lines_never_panic(
        line in any::<usize>(),
        replacement in "[ -~]{0,60}",
    ) {
        let mut lines: Vec<&str> = MINIMAL.lines().collect();
        let i = line % lines.len();
        lines[i] = &replacement;
        assert_no_panic(&lines.join("\n"));
    }
}
