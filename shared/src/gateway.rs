//! API Gateway HTTP API (payload 2.0) events, as the gateway would send them.
//!
//! The local server and the tests build requests here and convert them with `lambda_http`'s
//! own conversion, so handlers see exactly what they see in Lambda.

use base64::Engine;
use serde_json::{json, Map, Value};

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Host that parses as a URL authority (lambda_http builds the request URL from it).
fn is_sane_host(host: &[u8]) -> bool {
    !host.is_empty() && host.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
}

/// The event's `headers`: repeated headers joined with commas, as API Gateway does.
fn header_map(headers: &http::HeaderMap) -> Map<String, Value> {
    let mut hdrs = Map::new();
    for (name, value) in headers {
        // API Gateway only forwards a valid Host and scheme; lambda_http parses both into a URL.
        let sane = match name.as_str() {
            "host" => is_sane_host(value.as_bytes()),
            "x-forwarded-proto" => matches!(value.as_bytes(), b"http" | b"https"),
            _ => true,
        };
        if !sane {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    hdrs
}

/// The event's `queryStringParameters`: decoded, repeated keys joined with commas.
fn query_map(raw_query: &str) -> Map<String, Value> {
    let mut query = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")));
        match query.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    query
}

/// An HTTP request as the gateway matched it: what its payload 2.0 event is built from.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The matched route, `METHOD /path/{param}`.
    pub route_key: &'a str,
    /// The path as sent.
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: &'a str,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
    /// The route's parameters, as they appear in the path (percent-encoded).
    pub path_params: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

/// Builds the payload 2.0 event API Gateway would send for this request.
pub fn event(call: Call<'_>) -> Value {
    let Call { method, route_key, raw_path, raw_query, headers, path_params, body } = call;
    let hdrs = header_map(headers);
    let query = query_map(raw_query);
    let params: Map<String, Value> =
        path_params.iter().map(|(k, v)| (k.clone(), Value::String(percent_decode(v)))).collect();
    let (body, base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_string()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    let host = headers
        .get(http::header::HOST)
        .filter(|h| is_sane_host(h.as_bytes()))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query) },
        "pathParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get(http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("local-{}", now.timestamp_nanos_opt().unwrap_or_default()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// Builds the event and converts it into the `Request` a handler receives in Lambda.
pub fn request(call: Call<'_>) -> Result<lambda_http::Request, serde_json::Error> {
    let event = event(call);
    lambda_http::request::from_str(&event.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_panics_on_odd_input() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%é%zz%4"), "%é%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
