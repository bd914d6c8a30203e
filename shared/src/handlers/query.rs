//! Query parameters shared by several routes: the snapshot filters of the list and the export.

use lambda_http::Request;

use crate::error::ApiError;
use crate::exports::scrub::{self, Redaction};
use crate::http::{query_param, query_params};
use crate::snapshots::store::{Archived, Filters};

/// An RFC 3339 query parameter (400 naming it otherwise).
fn time_param(req: &Request, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    query_param(req, name)
        .map(|v| {
            crate::time::parse_rfc3339(v)
                .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 timestamp such as 2026-05-18T14:30:00Z"))
        })
        .transpose()
}

/// Reads the filters shared by the list and the export; `archived` is the caller's.
pub fn filters(req: &Request, archived: Archived) -> Result<Filters, ApiError> {
    let text = |name: &str| query_param(req, name).map(str::to_string);
    Filters {
        quality: text("quality"),
        category: text("category"),
        tags: query_params(req, "tag").into_iter().map(str::to_string).collect(),
        archived,
        from: time_param(req, "from")?,
        to: time_param(req, "to")?,
        contact_id: text("contactId"),
    }
    .validate("tag")
}

/// Reads `redact` and `redactTypes` (comma-separated, or repeated) into the redaction an export
/// asks for; `required` is the deployment's `EXPORT_REDACTION=required`.
pub fn redaction(req: &Request, required: bool) -> Result<Option<Redaction>, ApiError> {
    let listed = query_params(req, "redactTypes");
    let types = (!listed.is_empty()).then(|| {
        listed.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
    });
    scrub::redaction(query_param(req, "redact"), types, required)
}
