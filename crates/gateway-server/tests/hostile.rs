//! Slow and hostile HTTP clients, over raw TCP where a well-behaved client library would not
//! send what they send: none of them may stall other agents, the shutdown, or get an answer
//! outside the documented JSON error shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Options, start, token};
use gateway_core::RequestId;
use gateway_server::ServerConfig;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn action() -> Value {
    json!({
        "id": RequestId::new(),
        "action": "ops.echo",
        "resource": "ops:staging/web",
        "intent": "hostile-client test",
    })
}

fn options(server: ServerConfig) -> Options {
    Options {
        server,
        ..Options::default()
    }
}

/// Reads one whole HTTP/1.1 response (the server closes or sends Content-Length); returns the
/// status and the JSON body.
async fn response(stream: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no response within 10 s")
            .unwrap();
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
                return (status, body);
            }
        }
        assert!(n > 0, "connection closed before a response: {raw:?}");
    }
}

fn assert_error_shape(body: &Value, kind: &str) {
    assert_eq!(body["error"]["kind"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// 100 connections holding half a request head neither keep another agent from being served
/// nor keep their connections past the header read timeout, nor hold up the shutdown beyond
/// its drain bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_stall_nothing() {
    let h = start(options(ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        shutdown_drain: Duration::from_secs(1),
        ..ServerConfig::default()
    }))
    .await;
    let mut loris = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"POST /v1/actions HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
            .await
            .unwrap();
        loris.push(s);
    }
    // Another agent is served while they hang.
    let started = Instant::now();
    let (status, out) = h.post("/v1/actions", Some(&h.agent_b), &action()).await;
    assert_eq!(status, 200, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Each is closed once the header read timeout passes (hyper answers 408 or just closes).
    for mut s in loris {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a half-sent request kept its connection for 5 s"
        );
    }

    // New half-sent requests and one request in flight (its body arrives slowly: the handler
    // waits up to the 10 s body read timeout), then shutdown: it returns within the drain
    // bound all the same.
    let mut in_flight = TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\"",
        token(&h.agent_a)
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
        held.push(s);
    }
    let took = h.shut_down().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(
        TcpStream::connect(h.addr).await.is_err(),
        "still accepting after shutdown"
    );
    // The in-flight request's connection was dropped at the bound, not answered later.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), in_flight.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {rest:?}");
}

/// A body that trickles in slower than the body read timeout gets a JSON 408, and nothing runs.
#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let h = start(options(ServerConfig {
        body_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    }))
    .await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\"",
        token(&h.agent_a)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = response(&mut s).await;
    assert_eq!(status, 408, "{body}");
    assert_error_shape(&body, "timeout");
    assert!(h.runner.runs().is_empty());
}

/// A `Content-Length` over the limit is refused from the head alone: the body is never sent.
#[tokio::test]
async fn an_oversized_content_length_is_refused_before_the_body() {
    let h = start(Options::default()).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        token(&h.agent_a)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = response(&mut s).await;
    assert_eq!(status, 413, "{body}");
    assert_error_shape(&body, "invalid_input");
    // The same on the MCP endpoint.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = response(&mut s).await;
    assert_eq!(status, 413, "{body}");
    assert_error_shape(&body, "invalid_input");
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let h = start(Options::default()).await;
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .header("authorization", format!("Bearer {}", token(&h.agent_a)))
        .header("authorization", "Bearer somebody-else")
        .json(&action())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_error_shape(&body, "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one Authorization header"),
        "{body}"
    );
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn the_401_message_says_unauthenticated_once() {
    let h = start(Options::default()).await;
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth("nobody")
        .json(&action())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(message.matches("unauthenticated").count(), 1, "{message}");
}

#[tokio::test]
async fn unknown_body_fields_are_refused() {
    let h = start(Options::default()).await;
    let mut body = action();
    body["requested_ttl_secs"] = json!(5);
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 422, "{err}");
    assert_error_shape(&err, "invalid_input");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requested_ttl_secs"),
        "{err}"
    );
    assert!(h.runner.runs().is_empty());
}

/// Refusals from routing and from the size limits, not only from handlers, are JSON.
#[tokio::test]
async fn every_refusal_is_in_the_json_error_shape() {
    let h = start(Options::default()).await;
    // 405: a known path, another method.
    let resp = h
        .http
        .get(format!("{}/v1/actions", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_error_shape(&resp.json::<Value>().await.unwrap(), "invalid_input");
    let resp = h
        .http
        .delete(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_error_shape(&resp.json::<Value>().await.unwrap(), "invalid_input");
    // 414: a 9 KiB path.
    let resp = h
        .http
        .get(format!("{}/v1/actions/{}", h.base, "a".repeat(9 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 414);
    assert_error_shape(&resp.json::<Value>().await.unwrap(), "invalid_input");
    // 431: 40 KiB of headers.
    let resp = h
        .http
        .get(format!("{}/healthz", h.base))
        .header("x-padding", "p".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    assert_error_shape(&resp.json::<Value>().await.unwrap(), "invalid_input");
    // 404 for an unknown path, and for a malformed action id (after authentication).
    let (status, err) = h.get("/nope", None).await;
    assert_eq!(status, 404);
    assert_error_shape(&err, "not_found");
    let (status, err) = h.get("/v1/actions/%ff%fe", Some(&h.agent_a)).await;
    assert_eq!(status, 404, "{err}");
    assert_error_shape(&err, "not_found");
}
