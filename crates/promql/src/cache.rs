//! Bounded caches of the work every query would otherwise repeat: parsing the query text, and
//! compiling its matchers' regexes.
//!
//! Dashboards and success criteria send the same few queries again and again (the panel every
//! second or two, each criterion every evaluation). Profiling the backend under such a query
//! put most of its time in the `regex` crate's automaton builder, rebuilding the same anchored
//! regex at every request. Both caches are bounded by entry count ([`quick_cache`], which
//! evicts the least useful entries), and keys longer than [`MAX_KEY_BYTES`] are never cached,
//! so a few huge queries cannot pin memory. Only successes are kept: an invalid query or
//! regex is parsed again, and gets its error again.

use std::sync::{Arc, LazyLock};

use promql_parser::parser::Expr;
use quick_cache::sync::Cache;
use regex::Regex;

/// Query texts and regex sources longer than this are not cached.
pub const MAX_KEY_BYTES: usize = 4096;

/// How many parsed queries one [`crate::Engine`] keeps.
pub const PARSED_QUERIES: usize = 512;

/// How many compiled matcher regexes the process keeps.
pub const COMPILED_REGEXES: usize = 1024;

/// Parsed queries by their text, shared by the clones of one engine.
pub(crate) struct ParseCache(Cache<String, Arc<Expr>>);

impl ParseCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Cache::new(capacity.max(1)))
    }

    /// The cached syntax tree of `query`, or the result of `parse` (kept when it is a tree).
    pub(crate) fn get_or_parse<E>(
        &self,
        query: &str,
        parse: impl FnOnce(&str) -> Result<Expr, E>,
    ) -> Result<Arc<Expr>, E> {
        if query.len() > MAX_KEY_BYTES {
            return parse(query).map(Arc::new);
        }
        if let Some(expr) = self.0.get(query) {
            return Ok(expr);
        }
        let expr = Arc::new(parse(query)?);
        self.0.insert(query.to_owned(), Arc::clone(&expr));
        Ok(expr)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParseCache")
            .field("len", &self.0.len())
            .field("capacity", &self.0.capacity())
            .finish()
    }
}

/// Compiled regexes by their anchored source. A regex is shared as an `Arc<Regex>` rather than
/// cloned: a cloned `Regex` shares the compiled program but starts with empty match caches.
static REGEXES: LazyLock<Cache<String, Arc<Regex>>> = LazyLock::new(|| Cache::new(COMPILED_REGEXES));

/// `^(?s:source)$` compiled, as PromQL anchors every matcher and `label_replace` regex, from
/// the process-wide cache when it was compiled before.
pub(crate) fn anchored_regex(source: &str) -> Result<Arc<Regex>, regex::Error> {
    let anchored = format!("^(?s:{source})$");
    if anchored.len() > MAX_KEY_BYTES {
        return Regex::new(&anchored).map(Arc::new);
    }
    if let Some(re) = REGEXES.get(anchored.as_str()) {
        return Ok(re);
    }
    let re = Arc::new(Regex::new(&anchored)?);
    REGEXES.insert(anchored, Arc::clone(&re));
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Expr, String> {
        promql_parser::parser::parse(q)
    }

    #[test]
    fn a_parsed_query_is_reused_and_errors_are_not_kept() {
        let cache = ParseCache::new(4);
        let a = cache.get_or_parse("sum(rate(x[1m]))", parse).unwrap();
        let b = cache
            .get_or_parse("sum(rate(x[1m]))", |_| -> Result<Expr, String> {
                panic!("parsed twice")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cache.get_or_parse("sum(", parse).is_err());
        assert!(
            cache.get_or_parse("sum(", parse).is_err(),
            "the error comes back every time"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_parse_cache_stays_within_its_bound() {
        let cache = ParseCache::new(8);
        for i in 0..200 {
            cache.get_or_parse(&format!("x{i}"), parse).unwrap();
        }
        assert!(cache.len() <= 8, "{} entries", cache.len());
    }

    #[test]
    fn a_huge_query_is_answered_but_not_kept() {
        let cache = ParseCache::new(8);
        let huge = format!("x + {}", "1 + ".repeat(MAX_KEY_BYTES / 4) + "1");
        assert!(huge.len() > MAX_KEY_BYTES);
        cache.get_or_parse(&huge, parse).unwrap();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_regex_is_compiled_once_and_shared() {
        let a = anchored_regex("5..|cache-test-[0-9]+").unwrap();
        let b = anchored_regex("5..|cache-test-[0-9]+").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.is_match("503") && a.is_match("cache-test-12"));
        assert!(!a.is_match("x503") && !a.is_match("5031"), "anchored at both ends");
        assert!(anchored_regex("(").is_err());
        let long = "a".repeat(MAX_KEY_BYTES);
        let c = anchored_regex(&long).unwrap();
        let d = anchored_regex(&long).unwrap();
        assert!(!Arc::ptr_eq(&c, &d), "a source over the bound is compiled each time");
    }
}
