//! The scenario library shipped inside the binary: every `scenarios/*.yaml` of the repository
//! and the instructor guides beside them, embedded at build time.

/// `(file name, contents)` of every embedded file: scenarios (`.yaml`) and guides (`.md`).
pub const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/library.rs"));

/// The embedded scenario files, `(file name, YAML)`.
pub fn scenarios() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().copied().filter(|(name, _)| name.ends_with(".yaml"))
}

/// An embedded guide by file name.
pub fn guide(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}
