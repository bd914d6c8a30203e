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

#[cfg(test)]
mod tests {
    use super::*;

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
