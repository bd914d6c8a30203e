//! Grouped, stratified, reproducible train / validation / test splits.
//!
//! Every example belongs to a group (by default its customer, `contactId`), and a group goes
//! whole to one split, so a customer's conversations never straddle files. Groups are taken in
//! the order they first appeared (their oldest snapshot's id, which names its creation instant)
//! within their stratum (the `stratifyBy` field of that oldest snapshot), and each group goes to
//! the split furthest behind its share: after `n` groups of a stratum a split holds its share of
//! them, `p·n`, to within about one group (below by less than `1 + validation + test`, never a
//! whole group above). A keyed hash of the seed and the stratum sets where each stratum's
//! sequence starts, so different seeds give different splits. Since a group's place depends only
//! on the groups that appeared before it, adding snapshots never moves a group already assigned.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ApiError;
use crate::snapshots::model::Snapshot;
use crate::validate::Issues;

/// A split's name, also the suffix of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The rest.
    Train,
    /// `validation` of every stratum.
    Validation,
    /// `test` of every stratum.
    Test,
}

impl Split {
    /// `train`, `validation`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Validation => "validation",
            Self::Test => "test",
        }
    }
}

/// What groups the examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBy {
    /// The customer: one customer's snapshots go to one split.
    #[default]
    #[serde(rename = "contactId")]
    ContactId,
    /// Each snapshot on its own.
    #[serde(rename = "snapshotId")]
    SnapshotId,
}

/// What strata are split in the same proportions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StratifyBy {
    /// The snapshot's `quality` (absent is a stratum of its own).
    Quality,
    /// The snapshot's `category` (absent is a stratum of its own).
    Category,
}

/// `split` of an export job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitSpec {
    /// Share of groups for validation, in [0, 1).
    #[serde(default)]
    pub validation: f64,
    /// Share of groups for test, in [0, 1).
    #[serde(default)]
    pub test: f64,
    /// Any string; the same seed and data give the same split.
    #[serde(default)]
    pub seed: String,
    /// What groups the examples.
    #[serde(default)]
    pub group_by: GroupBy,
    /// Strata split in the same proportions; `None`: one stratum.
    #[serde(default)]
    pub stratify_by: Option<StratifyBy>,
}

/// Largest seed, in characters.
pub const MAX_SEED_CHARS: usize = 256;

impl SplitSpec {
    /// Checks the shares and the seed, naming each problem.
    pub fn validate(self) -> Result<Self, ApiError> {
        let mut issues = Issues::default();
        for (name, share) in [("split.validation", self.validation), ("split.test", self.test)] {
            if !(0.0..1.0).contains(&share) {
                issues.push(name, "must be at least 0 and below 1");
            }
        }
        if self.validation + self.test >= 1.0 {
            issues.push("split", "validation and test must leave a share for train (their sum below 1)");
        } else if self.validation + self.test <= 0.0 {
            issues.push("split", "validation or test must be above 0");
        }
        if self.seed.chars().count() > MAX_SEED_CHARS {
            issues.push("split.seed", format!("must be at most {MAX_SEED_CHARS} characters"));
        }
        issues.finish("Invalid `split`")?;
        Ok(self)
    }

    /// The splits that get a file, in order: train, then validation and test when their share is above 0.
    pub fn splits(&self) -> Vec<Split> {
        let mut out = vec![Split::Train];
        if self.validation > 0.0 {
            out.push(Split::Validation);
        }
        if self.test > 0.0 {
            out.push(Split::Test);
        }
        out
    }

    /// The group of a snapshot.
    pub fn group_of<'a>(&self, s: &'a Snapshot) -> &'a str {
        match self.group_by {
            GroupBy::ContactId => &s.contact.id,
            GroupBy::SnapshotId => &s.id,
        }
    }

    /// The stratum of a snapshot (`""` for absent values and without `stratifyBy`).
    pub fn stratum_of<'a>(&self, s: &'a Snapshot) -> &'a str {
        match self.stratify_by {
            Some(StratifyBy::Quality) => s.quality.as_deref().unwrap_or(""),
            Some(StratifyBy::Category) => s.category.as_deref().unwrap_or(""),
            None => "",
        }
    }

    /// A keyed hash of the seed and `stratum` as a number in [0, 1), one per `purpose`.
    fn offset(&self, stratum: &str, purpose: &str) -> f64 {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.seed.as_bytes()) else { return 0.0 };
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(stratum.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut top = [0u8; 8];
        top.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(top) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where a group first appeared: its oldest snapshot's id, and that snapshot's stratum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstSeen {
    /// The oldest snapshot's id (ids sort by creation).
    pub first_id: String,
    /// Its stratum.
    pub stratum: String,
}

/// Collects the groups of the snapshots an export will write, in any order.
#[derive(Debug, Default)]
pub struct Groups {
    seen: HashMap<String, FirstSeen>,
}

impl Groups {
    /// Notes snapshot `s` (only its group, id and stratum are kept).
    pub fn add(&mut self, spec: &SplitSpec, s: &Snapshot) {
        let stratum = spec.stratum_of(s);
        let entry = self
            .seen
            .entry(spec.group_of(s).to_string())
            .or_insert_with(|| FirstSeen { first_id: s.id.clone(), stratum: stratum.to_string() });
        if s.id < entry.first_id {
            *entry = FirstSeen { first_id: s.id.clone(), stratum: stratum.to_string() };
        }
    }

    /// Groups noted so far.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none was noted.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Each group's split (see the module docs).
    pub fn assign(self, spec: &SplitSpec) -> HashMap<String, Split> {
        let mut by_stratum: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (group, seen) in self.seen {
            by_stratum.entry(seen.stratum).or_default().push((seen.first_id, group));
        }
        let mut out = HashMap::new();
        for (stratum, mut groups) in by_stratum {
            groups.sort();
            let shares = [(Split::Validation, spec.validation), (Split::Test, spec.test)];
            // How far each held-out split is behind its share, started at a keyed offset.
            let mut behind: Vec<f64> = shares.iter().map(|(s, _)| spec.offset(&stratum, s.name())).collect();
            for (_, group) in groups {
                for (b, (_, share)) in behind.iter_mut().zip(&shares) {
                    *b += share;
                }
                let furthest = (0..shares.len()).max_by(|&a, &b| behind[a].total_cmp(&behind[b]));
                let split = match furthest {
                    Some(i) if behind[i] >= 1.0 => {
                        behind[i] -= 1.0;
                        shares[i].0
                    }
                    _ => Split::Train,
                };
                out.insert(group, split);
            }
        }
        out
    }
}

/// The snapshots of one split: those whose group the assignment puts there (a group that
/// appeared after the assignment was made goes to train).
#[derive(Debug, Clone)]
pub struct Keep {
    /// How groups are formed.
    pub spec: SplitSpec,
    /// The split kept.
    pub split: Split,
    /// Each group's split.
    pub assignment: Arc<HashMap<String, Split>>,
    /// The newest snapshot when the assignment was made: every file holds the snapshots up to
    /// it and none after, so files written at different times hold the same data set.
    pub up_to: Option<String>,
}

impl Keep {
    /// Whether `s` belongs to the kept split.
    pub fn keeps(&self, s: &Snapshot) -> bool {
        let in_set = self.up_to.as_deref().is_some_and(|up_to| s.id.as_str() <= up_to);
        in_set && self.assignment.get(self.spec.group_of(s)).copied().unwrap_or(Split::Train) == self.split
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(validation: f64, test: f64) -> SplitSpec {
        SplitSpec { validation, test, seed: "s".into(), group_by: GroupBy::ContactId, stratify_by: None }
    }

    #[test]
    fn shares_are_checked_and_name_their_field() {
        assert!(spec(0.1, 0.1).validate().is_ok());
        let e = spec(0.6, 0.5).validate().unwrap_err();
        assert!(e.issues.iter().any(|i| i.starts_with("split:")), "{e:?}");
        let e = spec(-0.1, 1.0).validate().unwrap_err();
        assert!(
            e.issues.iter().any(|i| i.starts_with("split.validation"))
                && e.issues.iter().any(|i| i.starts_with("split.test"))
        );
        assert!(spec(0.0, 0.0).validate().is_err(), "nothing held out");
        assert_eq!(spec(0.2, 0.0).splits(), vec![Split::Train, Split::Validation]);
    }
}
