//! A blocking HTTP/1.1 client that reads responses exactly (status, headers, Content-Length
//! body), for keep-alive, pipelining and byte-level tests, and [`call`] for JSON APIs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD, 1xx, 204, 304).
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects; reads time out after 30 s (a hang on a busy machine, not a verdict).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one response; `head_request` = no body follows despite Content-Length.
    pub fn read_response(&mut self, head_request: bool) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line: {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if status >= 200 && !head_request && status != 204 && status != 304 {
            let len: usize = resp
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).unwrap();
        }
        resp
    }

    /// `GET path` on this connection (kept alive); its response.
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read_response(false)
    }

    /// True when the server has closed the connection (EOF within the read timeout).
    pub fn is_closed(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(within))
            .unwrap();
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// One request on a fresh connection with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.read_response(false)
}

/// One HTTP request on a fresh connection; the JSON body of the answer (Null when empty).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, Resp) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut c = Client::connect(addr);
    c.send(req.as_bytes());
    let resp = c.read_response(false);
    let value = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, value, resp)
}
