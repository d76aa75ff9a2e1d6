//! A local HTTP/1.1 server that counts what it executes, for the tests of journaled HTTP.
//! A request whose `Idempotency-Key` it has seen is answered from its cache and counted as a
//! redelivery, as a server honouring the header does; every other request is executed: its
//! answer names it and how often the same method, path and body were executed before.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct HttpLog {
    /// Requests received, redeliveries included.
    pub received: usize,
    /// Executions per `METHOD path body`.
    pub executions: HashMap<String, usize>,
    /// Keys seen again (a re-sent request), in order.
    pub redelivered: Vec<String>,
    /// Requests that came without an `Idempotency-Key`.
    pub unkeyed: usize,
    /// Every key received, in order, redeliveries included.
    pub keys: Vec<String>,
    answers: HashMap<String, String>,
}

#[derive(Clone)]
pub struct CountingServer {
    pub port: u16,
    log: Arc<Mutex<HttpLog>>,
}

/// What the server answers the `count`-th execution of `request`; a GET of `/bytes/N` is
/// answered with N bytes (to stream a large body).
pub fn reply_for(request: &str, count: usize) -> String {
    match request.strip_prefix("GET /bytes/").and_then(|rest| rest.trim().parse::<usize>().ok()) {
        Some(n) => "x".repeat(n.min(16 << 20)),
        None => format!("did {request} #{count}"),
    }
}

impl CountingServer {
    /// Listens on an ephemeral loopback port until the test process ends.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(HttpLog::default()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        Self { port, log }
    }

    /// The server another process started on `port`, as that process's children name it
    /// (its log is not shared: only the starting process checks it).
    pub fn at(port: u16) -> Self {
        Self { port, log: Arc::default() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> MutexGuard<'_, HttpLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reset(&self) {
        *self.log() = HttpLog::default();
    }
}

fn serve(stream: TcpStream, log: &Mutex<HttpLog>) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    if method.is_empty() {
        // A connection closed before its request (a client killed mid-way): nothing to do.
        return;
    }
    let (mut length, mut key) = (0usize, None);
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
        let Some((name, value)) = header.trim_end().split_once(':') else { continue };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "idempotency-key" => key = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length.min(16 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = format!("{method} {path} {}", String::from_utf8_lossy(&body));
    let reply = {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.received += 1;
        if let Some(key) = &key {
            log.keys.push(key.clone());
        }
        match key.as_ref().and_then(|k| log.answers.get(k).cloned()) {
            Some(reply) => {
                log.redelivered.push(key.clone().unwrap_or_default());
                reply
            }
            None => {
                let count = log.executions.entry(request.clone()).or_insert(0);
                *count += 1;
                let reply = reply_for(&request, *count);
                match &key {
                    Some(key) => {
                        log.answers.insert(key.clone(), reply.clone());
                    }
                    None => log.unkeyed += 1,
                }
                reply
            }
        }
    };
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
}
