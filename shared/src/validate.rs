//! Field validation that collects every problem, so one 400 names them all.

/// At most this many tags.
pub const MAX_TAGS: usize = 50;
/// Each tag at most this many characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Notes at most this many characters.
pub const MAX_NOTES_CHARS: usize = 10_000;
/// Other free-text fields at most this many characters.
pub const MAX_TEXT_CHARS: usize = 1_000;

/// Problems found so far.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<String>);

impl Issues {
    /// Records a problem with `field`.
    pub fn push(&mut self, field: &str, problem: impl std::fmt::Display) {
        self.0.push(format!("{field}: {problem}"));
    }

    /// Checks an optional text field's length in characters.
    pub fn text(&mut self, field: &str, value: Option<&str>, max_chars: usize) {
        if let Some(v) = value {
            if v.chars().count() > max_chars {
                self.push(field, format!("must be at most {max_chars} characters"));
            }
        }
    }

    /// Trims, drops empties, de-duplicates (keeping first order) and checks count and length.
    pub fn tags(&mut self, field: &str, tags: Option<Vec<String>>) -> Option<Vec<String>> {
        let tags = tags?;
        let mut out: Vec<String> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = tag.trim();
            if tag.is_empty() || out.iter().any(|t| t == tag) {
                continue;
            }
            if tag.chars().count() > MAX_TAG_CHARS {
                self.push(field, format!("each tag must be at most {MAX_TAG_CHARS} characters"));
                return None;
            }
            out.push(tag.to_string());
        }
        if out.len() > MAX_TAGS {
            self.push(field, format!("at most {MAX_TAGS} tags"));
        }
        Some(out)
    }

    /// `Ok` when nothing was found, else a 400 listing every problem.
    pub fn finish(self, message: &str) -> Result<(), crate::ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::ApiError::validation_issues(format!("{message}: {}", self.0.join("; ")), self.0))
        }
    }
}

/// `deserialize_with` for an optional count in a JSON body: JSON Schema's `integer` (what
/// `openapi.yaml` promises) includes `5.0`, which serde's `usize` refuses; other fractions,
/// negatives and non-numbers are still refused.
pub fn optional_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::de::{Deserialize, Error};
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return usize::try_from(u).map(Some).map_err(|_| D::Error::custom(format!("{n} is too large")));
    }
    match n.as_f64() {
        // Below 2^53 an f64 with no fraction is an exact integer.
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 => Ok(Some(f as usize)),
        _ => Err(D::Error::custom(format!("invalid value {n}, expected a non-negative integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional_count")]
        limit: Option<usize>,
    }

    #[test]
    fn counts_accept_integral_numbers_only() {
        let limit = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.limit);
        assert_eq!(limit("{}").unwrap(), None);
        assert_eq!(limit(r#"{"limit":null}"#).unwrap(), None);
        assert_eq!(limit(r#"{"limit":49990}"#).unwrap(), Some(49990));
        assert_eq!(limit(r#"{"limit":49990.0}"#).unwrap(), Some(49990));
        assert_eq!(limit(r#"{"limit":1e3}"#).unwrap(), Some(1000));
        for bad in
            [r#"{"limit":1.5}"#, r#"{"limit":-1}"#, r#"{"limit":-1.0}"#, r#"{"limit":"5"}"#, r#"{"limit":1e300}"#]
        {
            assert!(limit(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        let mut issues = Issues::default();
        let t = issues.tags("tags", Some(vec![" a ".into(), "a".into(), "".into(), "b".into()]));
        assert_eq!(t, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(issues.0.is_empty());
        issues.tags("tags", Some((0..51).map(|i| i.to_string()).collect()));
        issues.tags("tags", Some(vec!["x".repeat(65)]));
        assert_eq!(issues.0.len(), 2);
        assert!(issues.finish("Validation failed").is_err());
    }
}
