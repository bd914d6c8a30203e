//! DynamoDB's capacity rules, for choosing a layout by what it costs: an item's size (attribute
//! names plus values), and the units a write or a read of that size consumes.
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// Bytes per write unit: every write rounds up to whole kilobytes, per item and per index copy.
pub const WRITE_UNIT_BYTES: usize = 1024;
/// Bytes per read unit (strongly consistent; an eventually consistent read costs half). A read
/// by key rounds each item up on its own; a Query rounds the sum of its page's items.
pub const READ_UNIT_BYTES: usize = 4096;

/// An item's size as DynamoDB counts it.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, v)| name.len() + value_size(v)).sum()
}

/// A value's size: strings and binaries their bytes, numbers one byte per two significant
/// digits plus one, lists and maps three bytes plus one per element.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + value_size(x)).sum::<usize>(),
        _ => 0,
    }
}

/// A number's size: one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    1 + digits.trim_matches('0').len().max(1).div_ceil(2)
}

/// Write units of one write of an item of `bytes` (a transactional write counts twice).
pub fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_units_follow_dynamodbs_rules() {
        let s = |v: &str| AttributeValue::S(v.into());
        let item = HashMap::from([
            ("PK".to_string(), s("abc")),
            ("n".to_string(), AttributeValue::N("-0012.50".into())),
            ("l".to_string(), AttributeValue::L(vec![s("xy"), AttributeValue::Bool(true)])),
        ]);
        // PK 2+3; n 1 + (125: 2 bytes) + 1; l 1 + 3 + (1+2) + (1+1).
        assert_eq!(item_size(&item), 5 + 4 + 9);
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
    }
}
