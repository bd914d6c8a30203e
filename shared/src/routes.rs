//! Every route of `template.yaml`: the function that serves it, its method and path, and its
//! handler. The local server dispatches through this table, each Lambda binary calls its
//! handler directly, and a test checks both against the template, `functions/` and `events/`.

use std::future::Future;
use std::pin::Pin;

use lambda_http::{Body, Request, Response};

use crate::error::Envelope;
use crate::{handlers, AppState};

/// A handler future, borrowed from the state for the request's lifetime.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;
/// A route handler as a plain function pointer.
pub type Handler = for<'a> fn(&'a AppState, Request) -> HandlerFuture<'a>;

/// One HTTP route.
#[derive(Clone, Copy)]
pub struct Route {
    /// The kebab-case function name: folder, crate, binary and `events/<name>.json`.
    pub function: &'static str,
    /// HTTP method as API Gateway's route key spells it.
    pub method: &'static str,
    /// Path template with `{param}` segments, as in `template.yaml`.
    pub path: &'static str,
    /// Which error envelope the route answers with.
    pub envelope: Envelope,
    /// The handler the function's `main.rs` calls.
    pub handler: Handler,
    /// The handler's path as written in `main.rs` (checked by a test).
    pub handler_path: &'static str,
}

macro_rules! route {
    ($function:literal, $method:literal, $path:literal, $envelope:expr, $handler:path) => {
        Route {
            function: $function,
            method: $method,
            path: $path,
            envelope: $envelope,
            handler: |state, req| Box::pin($handler(state, req)),
            handler_path: concat!("shared::", stringify!($handler)),
        }
    };
}

/// The route table.
pub const ROUTES: &[Route] = &[
    route!("put-convo", "PUT", "/agents/{agentId}/convos/{convoId}", Envelope::Convocore, handlers::convos::put_convo),
    route!(
        "ingest-messages",
        "POST",
        "/agents/{agentId}/convos/{convoId}/messages",
        Envelope::Convocore,
        handlers::convos::ingest_messages
    ),
    route!("list-convos", "GET", "/agents/{agentId}/convos", Envelope::Convocore, handlers::convos::list_convos),
    route!(
        "export-convos",
        "GET",
        "/agents/{agentId}/convos/export",
        Envelope::Convocore,
        handlers::exports::export_agent_convos
    ),
    route!(
        "export-convo",
        "GET",
        "/agents/{agentId}/convos/{convoId}/export",
        Envelope::Convocore,
        handlers::exports::export_convo
    ),
    route!(
        "create-snapshot",
        "POST",
        "/api/training/snapshots",
        Envelope::Tether,
        handlers::snapshots::create_snapshot
    ),
    route!("list-snapshots", "GET", "/api/training/snapshots", Envelope::Tether, handlers::snapshots::list_snapshots),
    route!("get-snapshot", "GET", "/api/training/snapshots/{id}", Envelope::Tether, handlers::snapshots::get_snapshot),
    route!(
        "update-snapshot",
        "PATCH",
        "/api/training/snapshots/{id}",
        Envelope::Tether,
        handlers::snapshots::update_snapshot
    ),
    route!(
        "delete-snapshot",
        "DELETE",
        "/api/training/snapshots/{id}",
        Envelope::Tether,
        handlers::snapshots::delete_snapshot
    ),
    route!("export-training", "GET", "/api/training/export", Envelope::Tether, handlers::exports::export_training),
    route!("create-export", "POST", "/api/training/exports", Envelope::Tether, handlers::export_jobs::create_export),
    route!("list-exports", "GET", "/api/training/exports", Envelope::Tether, handlers::export_jobs::list_exports),
    route!("get-export", "GET", "/api/training/exports/{id}", Envelope::Tether, handlers::export_jobs::get_export),
];

/// Functions started by another function or by a schedule instead of a route: their name and
/// the handler their `main.rs` calls (checked by a test like the routes).
pub const BACKGROUND: &[(&str, &str)] =
    &[("export-worker", "shared::jobs::worker::handle"), ("scheduled-export", "shared::jobs::schedule::handle")];

/// Matches `path` against a route template, returning the path parameters.
pub fn match_path(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, p) in t.iter().zip(&p) {
        if let Some(name) = t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if p.is_empty() {
                return None;
            }
            params.push((name.to_string(), (*p).to_string()));
        } else if t != p {
            return None;
        }
    }
    Some(params)
}

/// A path's parameters, in template order: `(name, raw value)`.
pub type PathParams = Vec<(String, String)>;

/// The route for `method` and `path`: `Ok` with its parameters, `Err(true)` when the path
/// exists under another method (405), `Err(false)` when nothing matches (404).
pub fn find(method: &str, path: &str) -> Result<(&'static Route, PathParams), bool> {
    let mut path_known = false;
    // Literal segments win over parameters (`/convos/export` before `/convos/{convoId}`).
    let mut candidates: Vec<(&'static Route, PathParams)> =
        ROUTES.iter().filter_map(|r| match_path(r.path, path).map(|p| (r, p))).collect();
    candidates.sort_by_key(|(_, params)| params.len());
    for (route, params) in candidates {
        path_known = true;
        if route.method == method {
            return Ok((route, params));
        }
    }
    Err(path_known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_templates_and_reports_405_vs_404() {
        assert_eq!(
            match_path("/agents/{agentId}/convos", "/agents/a1/convos"),
            Some(vec![("agentId".to_string(), "a1".to_string())])
        );
        assert_eq!(match_path("/agents/{agentId}/convos", "/agents//convos"), None);
        assert_eq!(match_path("/agents/{agentId}/convos", "/agents/a/convos/x"), None);
        assert_eq!(find("GET", "/agents/a/convos").map(|(r, _)| r.function).ok(), Some("list-convos"));
        assert!(matches!(find("DELETE", "/agents/a/convos"), Err(true)));
        assert!(matches!(find("GET", "/nope"), Err(false)));
    }
}
