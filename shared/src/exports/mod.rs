//! Exports: training data (Tether's JSON, JSONL, fine-tune JSONL, CSV) and conversations
//! (Convocore's JSON and CSV), produced as a stream into an [`sink::ExportSink`] that answers
//! small files inline and streams large ones to S3 behind a presigned download URL.

pub mod changes;
pub mod convos;
pub mod counts;
pub mod dedup;
pub mod examples;
pub mod identity;
pub mod objects;
mod parts;
pub mod producer;
pub mod read_ahead;
pub mod redact;
pub mod scrub;
pub mod sink;
pub mod spec;
pub mod split;
pub mod stages;
pub mod training;

use crate::error::ApiError;
use crate::AppState;
pub use counts::Counts;

/// UTF-8 byte order mark: Excel reads accents and emoji in a CSV that starts with it.
pub const BOM: &[u8] = crate::lambda::UTF8_BOM;

/// Neutralises a CSV cell that a spreadsheet would run as a formula (`= + - @`, tab, CR)
/// by prefixing a single quote (OWASP's CSV injection advice).
pub fn safe_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// One RFC 4180 CSV record (CRLF, quotes doubled, line breaks kept inside quoted cells).
pub fn csv_record<'a>(cells: impl IntoIterator<Item = &'a str>) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(cells.into_iter().map(|c| safe_cell(c).into_owned())).map_err(|e| ApiError::internal("csv", e))?;
    w.into_inner().map_err(|e| ApiError::internal("csv", e))
}

/// A new export object key: namespaced by organization and kind, unguessable (128 random bits).
pub fn object_key(org: &crate::keys::Org, kind: &str, filename: &str) -> String {
    let random: u128 = rand::random();
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    crate::keys::export_object(org, kind, &date, random, filename)
}

/// A new export object: namespaced by organization, unguessable (128 random bits).
pub fn object_spec(
    state: &AppState,
    org: &crate::keys::Org,
    kind: &str,
    filename: &str,
    content_type: &str,
) -> sink::ObjectSpec {
    sink::ObjectSpec {
        bucket: state.config.bucket_name.clone(),
        key: object_key(org, kind, filename),
        content_type: content_type.to_string(),
        content_disposition: attachment(filename),
    }
}

/// `attachment; filename="<name>"`; names are built here from safe characters only.
pub fn attachment(filename: &str) -> String {
    let safe: String = filename.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    format!("attachment; filename=\"{safe}\"")
}

/// A CSV header row for `columns` (with the UTF-8 BOM).
pub fn csv_head(columns: &[&str]) -> Result<Vec<u8>, ApiError> {
    let mut head = BOM.to_vec();
    head.extend(csv_record(columns.iter().copied())?);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_names_cannot_inject_headers() {
        assert_eq!(safe_cell("=cmd()"), "'=cmd()");
        assert_eq!(safe_cell("-1"), "'-1");
        assert_eq!(safe_cell("\tx"), "'\tx");
        assert_eq!(safe_cell("plain"), "plain");
        assert_eq!(attachment("a\"b\r\nSet-Cookie: x.csv"), "attachment; filename=\"abSet-Cookiex.csv\"");
        let row = csv_record(["a,b", "say \"hi\"", "line\nbreak", "@x"]).unwrap();
        assert_eq!(String::from_utf8(row).unwrap(), "\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",'@x\r\n");
    }
}
