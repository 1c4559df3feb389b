//! CPU and memory of a process, read from `/proc/<pid>/stat` and `/proc/<pid>/statm`.
//!
//! Read by hand rather than with the `procfs` crate: the agent needs four numbers from two
//! files, which is a few lines of parsing (unit-tested below), against a crate that parses
//! every file of `/proc` and brings its own dependency tree.

use std::io;

use anyhow::Context as _;
use nix::unistd::{SysconfVar, sysconf};

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The state letter: `R`, `S`, `D`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// When the process started, in clock ticks after boot: with the pid, what identifies a
    /// process, so a reused pid is never taken for the process that had it.
    pub start_ticks: u64,
}

/// Why a `/proc` file could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// No `)` closing the command name.
    #[error("no ')' after the command name")]
    NoCommand,
    /// A field is missing or not a number.
    #[error("field {0} is missing or not a number")]
    Field(usize),
}

/// Parses `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so the fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let close = text.rfind(')').ok_or(ParseError::NoCommand)?;
    // Fields 3 onwards; field n is at index n - 3.
    let fields: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let number = |n: usize| -> Result<u64, ParseError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or(ParseError::Field(n))
    };
    let state = fields
        .first()
        .and_then(|f| f.chars().next())
        .ok_or(ParseError::Field(3))?;
    Ok(Stat {
        state,
        cpu_ticks: number(14)? + number(15)?,
        start_ticks: number(22)?,
    })
}

/// Parses the resident set size, in pages, from `/proc/<pid>/statm` (its second field).
pub(crate) fn parse_statm_resident(text: &str) -> Result<u64, ParseError> {
    text.split_ascii_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or(ParseError::Field(2))
}

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    /// From `stat`.
    pub stat: Stat,
    /// User plus system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
}

/// The units `/proc` counts in, read once at start-up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Units {
    ticks_per_second: f64,
    page_size: u64,
}

impl Units {
    /// Asks the system for its clock tick and page size.
    pub(crate) fn from_system() -> anyhow::Result<Self> {
        let ticks = sysconf(SysconfVar::CLK_TCK)
            .context("Failed to read the clock tick (sysconf CLK_TCK)")?
            .filter(|t| *t > 0)
            .context("The system reports no clock tick (sysconf CLK_TCK)")?;
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .context("Failed to read the page size (sysconf PAGE_SIZE)")?
            .filter(|p| *p > 0)
            .context("The system reports no page size (sysconf PAGE_SIZE)")?;
        Ok(Self {
            ticks_per_second: ticks as f64,
            page_size: page as u64,
        })
    }

    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/statm`.
    ///
    /// These are synchronous reads: a `/proc` file is generated in memory by the kernel and
    /// read in microseconds, less than a trip through `spawn_blocking` would cost.
    pub(crate) fn sample(&self, pid: u32) -> io::Result<Sample> {
        let invalid = |e: ParseError| io::Error::new(io::ErrorKind::InvalidData, e);
        let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?).map_err(invalid)?;
        let pages = parse_statm_resident(&std::fs::read_to_string(format!("/proc/{pid}/statm"))?).map_err(invalid)?;
        Ok(Sample {
            stat,
            cpu_seconds: stat.cpu_ticks as f64 / self.ticks_per_second,
            memory_bytes: pages.saturating_mul(self.page_size),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_stat(text: &str, expected: Result<Stat, ParseError>) {
        assert_eq!(parse_stat(text), expected, "{text}");
    }

    #[test]
    fn stat_fields() {
        let real = "4242 (sleep) S 1 4242 4242 0 -1 4194304 95 0 0 0 7 3 0 0 20 0 1 0 123456 8192000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        check_stat(
            real,
            Ok(Stat {
                state: 'S',
                cpu_ticks: 10,
                start_ticks: 123456,
            }),
        );
        // A command name with spaces and parentheses.
        let odd = "7 (a ) b (c)) T 1 7 7 0 -1 0 0 0 0 0 100 50 0 0 20 0 1 0 99 0 0";
        check_stat(
            odd,
            Ok(Stat {
                state: 'T',
                cpu_ticks: 150,
                start_ticks: 99,
            }),
        );
        check_stat("7 sleep S 1", Err(ParseError::NoCommand));
        check_stat("7 (sleep) S 1 7 7 0 -1 0 0 0 0 0 x 5", Err(ParseError::Field(14)));
        check_stat("7 (sleep) S 1 7 7 0 -1 0 0 0 0 0 1 5 0 0", Err(ParseError::Field(22)));
        check_stat("7 (sleep)", Err(ParseError::Field(3)));
    }

    #[test]
    fn statm_resident() {
        assert_eq!(parse_statm_resident("2000 350 120 5 0 180 0\n"), Ok(350));
        assert_eq!(parse_statm_resident("2000"), Err(ParseError::Field(2)));
        assert_eq!(parse_statm_resident("2000 x"), Err(ParseError::Field(2)));
    }

    #[test]
    fn samples_this_process() {
        let units = Units::from_system().unwrap();
        let sample = units.sample(std::process::id()).unwrap();
        assert!(sample.memory_bytes > 0);
        assert!(matches!(sample.stat.state, 'R' | 'S'));
        let again = units.sample(std::process::id()).unwrap();
        assert_eq!(again.stat.start_ticks, sample.stat.start_ticks);
        assert!(again.cpu_seconds >= sample.cpu_seconds);
    }
}
