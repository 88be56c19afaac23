//! Connections never hang and never show a password: a port where something other than
//! PostgreSQL listens fails within the connect timeout, naming the address.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use e2e_migrations::db;

/// A listener on 127.0.0.1 that accepts and then, per connection, runs `serve`; kept open.
fn listener(serve: fn(std::net::TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    port
}

fn silent(s: std::net::TcpStream) {
    // Accept and never answer, holding the connection open.
    std::thread::sleep(Duration::from_secs(120));
    drop(s);
}

fn http(mut s: std::net::TcpStream) {
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

async fn connect_err(url: &str) -> String {
    let attempt = db::connect_within(url, Duration::from_secs(1));
    match tokio::time::timeout(Duration::from_secs(30), attempt).await.expect("the connect timeout ends the attempt") {
        Ok(_) => panic!("connected to something that is not PostgreSQL"),
        Err(e) => e2e_migrations::error::report(&e),
    }
}

#[tokio::test]
async fn a_listener_that_never_answers_fails_within_the_timeout_naming_the_address() {
    let port = listener(silent);
    let e = connect_err(&format!("postgres://u:S3cret@127.0.0.1:{port}/db")).await;
    assert!(e.contains(&format!("connecting to 127.0.0.1:{port}")), "{e}");
    assert!(e.contains("no PostgreSQL answer within 1 s"), "{e}");
    assert!(!e.contains("S3cret"), "{e}");
}

#[tokio::test]
async fn an_http_server_fails_naming_the_address() {
    let port = listener(http);
    let e = connect_err(&format!("host=127.0.0.1 port={port} user=u password='S3c ret' dbname=db")).await;
    // What was being done (the address, the URL without its password), then the driver's reason.
    let (what, why) = e.split_once("): ").unwrap_or_else(|| panic!("no cause: {e}"));
    assert!(what.starts_with(&format!("connecting to 127.0.0.1:{port} (host=127.0.0.1")), "{e}");
    assert!(!why.is_empty() && !why.contains("no PostgreSQL answer"), "fails on the answer, not the timeout: {e}");
    assert!(!e.contains("S3c"), "{e}");
}

#[tokio::test]
async fn an_unencoded_at_in_a_password_is_refused_without_showing_it() {
    let e = connect_err("postgres://u:S3c@ret@127.0.0.1:1/db").await;
    assert!(e.contains("unencoded '@'") && e.contains("%40"), "{e}");
    assert!(!e.contains("S3c") && !e.contains("ret@"), "{e}");
}

#[tokio::test]
async fn an_invalid_connection_string_says_why_without_showing_the_password() {
    // The driver's own words ("invalid connection string") say nothing of the cause; the cause
    // (an unknown option) may quote a piece of the password, so it is said in other words.
    let e = connect_err("host=127.0.0.1 password=se cret=x dbname=db").await;
    assert_eq!(
        e,
        "invalid database URL host=127.0.0.1 password=*** *** dbname=db: invalid connection string: unknown option (a \
         word that is not a connection setting: a misspelt setting, or part of a value with a space that is not in \
         single quotes, as password='a b' is)"
    );
    assert!(!e.contains("cret"), "{e}");
    // A misspelt setting is named as a possible cause too (it was blamed on spaces alone).
    let e = connect_err("host=127.0.0.1 sslmod=disable dbname=db").await;
    assert!(e.contains("a misspelt setting"), "{e}");
}
