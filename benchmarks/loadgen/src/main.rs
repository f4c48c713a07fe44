//! Load for `benchmarks/ingest.py`: posts Snakemake messages to a panoptes server over
//! keep-alive connections, one blocking thread per connection, and prints every request's
//! latency as JSON. It is written in Rust so that the load costs the shared two cores little
//! (a Python client spends about as much CPU per request as the server does).
//!
//!     panoptes-loadgen <port> <connections> <work file> [path] [keep-alive|close]
//!
//! `keep-alive` (the default) keeps each connection open across requests, as the Snakemake 9
//! plugin does; `close` opens a new TCP connection for every request and closes it once the
//! answer has arrived, as Snakemake 7 and 8 do (`requests.post` without a session). The
//! latency of a request includes its connect in that mode.
//!
//! The work file has one unit of messages per line; a unit's messages go out in order on
//! one connection, each after the previous one was answered, as Snakemake sends them:
//!
//!     first <workflow> <body>                 a workflow's opening progress message
//!     job <workflow> <body> <body> ...        one job's messages
//!     last <workflow> <body>                  sent once every job unit of <workflow> is done
//!
//! Bodies are form-encoded (no spaces). Units are handed out in file order; a `last` unit
//! joins the queue when its workflow's last `job` unit has been answered.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

struct Unit {
    workflow: u64,
    kind: Kind,
    bodies: Vec<Vec<u8>>,
}

#[derive(PartialEq)]
enum Kind {
    First,
    Job,
    Last,
}

struct Work {
    queue: VecDeque<Unit>,
    held: HashMap<u64, Unit>,      // the `last` units, by workflow
    jobs_left: HashMap<u64, usize>, // job units not yet answered, by workflow
    units_left: usize,
}

struct Shared {
    work: Mutex<Work>,
    ready: Condvar,
}

struct Outcome {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn read_work(path: &str) -> Work {
    let text = std::fs::read_to_string(path).expect("cannot read the work file");
    let mut work = Work {
        queue: VecDeque::new(),
        held: HashMap::new(),
        jobs_left: HashMap::new(),
        units_left: 0,
    };
    for line in text.lines().filter(|line| !line.is_empty()) {
        let mut parts = line.split(' ');
        let kind = match parts.next() {
            Some("first") => Kind::First,
            Some("job") => Kind::Job,
            Some("last") => Kind::Last,
            other => panic!("unknown unit kind {other:?}"),
        };
        let workflow: u64 = parts.next().and_then(|w| w.parse().ok()).expect("workflow id");
        let bodies = parts.map(|body| body.as_bytes().to_vec()).collect();
        let unit = Unit { workflow, kind, bodies };
        work.units_left += 1;
        match unit.kind {
            Kind::Last => {
                work.held.insert(workflow, unit);
            }
            Kind::Job => {
                *work.jobs_left.entry(workflow).or_default() += 1;
                work.queue.push_back(unit);
            }
            Kind::First => work.queue.push_back(unit),
        }
    }
    work
}

/// Takes the next unit, waiting while others may still release a `last` unit.
fn take(shared: &Shared) -> Option<Unit> {
    let mut work = shared.work.lock().unwrap();
    loop {
        if let Some(unit) = work.queue.pop_front() {
            return Some(unit);
        }
        if work.units_left == 0 {
            return None;
        }
        work = shared.ready.wait(work).unwrap();
    }
}

fn done(shared: &Shared, unit: &Unit) {
    let mut work = shared.work.lock().unwrap();
    work.units_left -= 1;
    if unit.kind == Kind::Job {
        let left = work.jobs_left.get_mut(&unit.workflow).unwrap();
        *left -= 1;
        if *left == 0 {
            if let Some(last) = work.held.remove(&unit.workflow) {
                work.queue.push_back(last);
            }
        }
    }
    shared.ready.notify_all();
}

struct Connection {
    port: u16,
    // A new connection per request (Snakemake 7/8) instead of one kept alive.
    per_request: bool,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// One request and its response: (status, body).
    fn post(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().unwrap();
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head);
        request.extend_from_slice(body);
        stream.write_all(&request)?;
        let mut chunk = [0u8; 16384];
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("the server closed the connection"));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        };
        let head_text = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        let status: u16 = head_text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let mut length = 0usize;
        let mut close = false;
        for line in head_text.split("\r\n") {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
                close = true;
            }
        }
        while self.buffer.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("the server closed mid-response"));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        if close || self.per_request {
            self.stream = None;
        }
        Ok((status, body))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn worker(shared: Arc<Shared>, port: u16, path: String, per_request: bool) -> Outcome {
    let mut connection = Connection { port, per_request, stream: None, buffer: Vec::new() };
    let mut outcome = Outcome { latencies_us: Vec::new(), errors: 0, first_error: None };
    while let Some(unit) = take(&shared) {
        for body in &unit.bodies {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let started = Instant::now();
            let result = connection.post(head.as_bytes(), body);
            outcome.latencies_us.push(started.elapsed().as_micros() as u64);
            let problem = match result {
                Ok((200, _)) => None,
                Ok((status, answer)) => {
                    Some(format!("{status}: {}", String::from_utf8_lossy(&answer)))
                }
                Err(error) => {
                    connection.stream = None;
                    Some(error.to_string())
                }
            };
            if let Some(problem) = problem {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(problem);
            }
        }
        done(&shared, &unit);
    }
    outcome
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: panoptes-loadgen <port> <connections> <work file> [path] [keep-alive|close]"
        );
        std::process::exit(2);
    }
    let port: u16 = args[1].parse().expect("port");
    let connections: usize = args[2].parse().expect("connections");
    let path = args.get(4).cloned().unwrap_or_else(|| "/update_workflow_status".into());
    let per_request = match args.get(5).map(String::as_str) {
        None | Some("keep-alive") => false,
        Some("close") => true,
        Some(other) => {
            eprintln!("unknown connection mode {other:?}: keep-alive or close");
            std::process::exit(2);
        }
    };
    let shared = Arc::new(Shared { work: Mutex::new(read_work(&args[3])), ready: Condvar::new() });
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let path = path.clone();
            std::thread::spawn(move || worker(shared, port, path, per_request))
        })
        .collect();
    let outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let seconds = started.elapsed().as_secs_f64();
    let latencies: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.iter().map(|us| us.to_string()))
        .collect();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let first_error = outcomes.iter().find_map(|o| o.first_error.clone()).unwrap_or_default();
    println!(
        "{{\"seconds\": {seconds}, \"errors\": {errors}, \"first_error\": {}, \"latencies_us\": [{}]}}",
        json_string(&first_error),
        latencies.join(",")
    );
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
