//! Durations as scenario files write them: `30s`, `2m`, `1h30m`, `500ms`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from text like `30s`, `2m`, `1h30m` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `30s`, `2m`, `1h30m`, `1h 30m`, `500ms`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("expected a duration like 30s, 2m or 1h30m, found an empty string".into());
        }
        if t.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "expected a duration with a unit like 30s, 2m or 1h30m, found `{t}` (no unit)"
            ));
        }
        humantime::parse_duration(t)
            .map(Self)
            .map_err(|e| format!("expected a duration like 30s, 2m or 1h30m, found `{t}` ({e})"))
    }

    /// The standard-library duration.
    pub fn std(self) -> std::time::Duration {
        self.0
    }

    /// Seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        if !total_ms.is_multiple_of(1000) {
            return write!(f, "{total_ms}ms");
        }
        let mut s = (total_ms / 1000) as u64;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 30s, 2m or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "expected a duration with a unit like 30s, 2m or 1h30m, found `{v}` (no unit)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "expected a duration with a unit like 30s, 2m or 1h30m, found `{v}` (no unit)"
                )))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_scenarios_use() {
        let secs = |t: &str| Duration::parse(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("30s"), Ok(30.0));
        assert_eq!(secs("2m"), Ok(120.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1h 30m"), Ok(5400.0));
        assert_eq!(secs("500ms"), Ok(0.5));
        assert!(Duration::parse("30").unwrap_err().contains("no unit"));
        assert!(Duration::parse("soon").unwrap_err().contains("found `soon`"));
        assert!(Duration::parse("").is_err());
    }

    #[test]
    fn prints_the_way_it_is_written() {
        for t in ["30s", "2m", "1h30m", "500ms", "1h", "0s"] {
            assert_eq!(Duration::parse(t).map(|d| d.to_string()), Ok(t.to_owned()));
        }
    }
}
