//! rtpengine's ng control protocol: `<cookie> <bencoded dict>` over UDP,
//! answered with the same cookie. The calls are set up the way a SIP proxy
//! would drive it: `offer` with the caller's SDP (rtpengine returns the SDP
//! for the callee, pointing at its port facing the callee), `answer` with
//! the callee's SDP (returns the SDP for the caller), `delete` at the end.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::rtp::{CallPath, Endpoints};
use super::sip::sdp_addr;

/// A bencode value (BEP 3): byte strings, integers, lists, dictionaries
/// with keys in sorted order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// One value from the front of `input`, and what follows it.
    pub fn decode(input: &[u8]) -> Option<(Value, &[u8])> {
        match *input.first()? {
            b'i' => {
                let end = input.iter().position(|&b| b == b'e')?;
                let n = std::str::from_utf8(&input[1..end]).ok()?.parse().ok()?;
                Some((Value::Int(n), &input[end + 1..]))
            }
            b'l' => {
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Value::decode(rest)?;
                    items.push(v);
                    rest = r;
                }
                Some((Value::List(items), &rest[1..]))
            }
            b'd' => {
                let mut rest = &input[1..];
                let mut map = BTreeMap::new();
                while *rest.first()? != b'e' {
                    let (Value::Bytes(k), r) = Value::decode(rest)? else {
                        return None;
                    };
                    let (v, r) = Value::decode(r)?;
                    map.insert(k, v);
                    rest = r;
                }
                Some((Value::Dict(map), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = input.iter().position(|&b| b == b':')?;
                let len: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
                let start = colon + 1;
                let bytes = input.get(start..start + len)?.to_vec();
                Some((Value::Bytes(bytes), &input[start + len..]))
            }
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    Value::Dict(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum NgError {
    #[error("ng socket: {0}")]
    Io(#[from] io::Error),
    #[error("no answer from rtpengine to {0}")]
    Timeout(&'static str),
    #[error("rtpengine refused {command}: {reason}")]
    Refused {
        command: &'static str,
        reason: String,
    },
    #[error("rtpengine's {0} answer has no usable SDP")]
    NoSdp(&'static str),
}

pub struct Ng {
    socket: UdpSocket,
    target: SocketAddr,
    next_cookie: u64,
    run: String,
    buf: Vec<u8>,
}

impl Ng {
    pub fn new(target: SocketAddr) -> io::Result<Ng> {
        let socket = UdpSocket::bind((target.ip(), 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Ng {
            socket,
            target,
            next_cookie: 0,
            run: format!("{:x}", std::process::id()),
            buf: vec![0; 65536],
        })
    }

    fn request(
        &mut self,
        command: &'static str,
        mut pairs: Vec<(&str, Value)>,
    ) -> Result<Value, NgError> {
        pairs.push(("command", Value::str(command)));
        let mut msg = Vec::new();
        self.next_cookie += 1;
        let cookie = format!("{}_{}", self.run, self.next_cookie);
        msg.extend_from_slice(cookie.as_bytes());
        msg.push(b' ');
        dict(&pairs).encode(&mut msg);
        for _attempt in 0..4 {
            self.socket.send_to(&msg, self.target)?;
            loop {
                let n = match self.socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                };
                let reply = &self.buf[..n];
                let Some(rest) = reply
                    .strip_prefix(cookie.as_bytes())
                    .and_then(|r| r.strip_prefix(b" "))
                else {
                    continue; // a late answer to an earlier attempt
                };
                let (value, _) = Value::decode(rest).ok_or(NgError::Refused {
                    command,
                    reason: "undecodable answer".into(),
                })?;
                let result = value.get("result").and_then(Value::bytes).unwrap_or(b"");
                if result != b"ok" {
                    let reason = value
                        .get("error-reason")
                        .and_then(Value::bytes)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_else(|| String::from_utf8_lossy(result).into_owned());
                    return Err(NgError::Refused { command, reason });
                }
                return Ok(value);
            }
        }
        Err(NgError::Timeout(command))
    }

    fn ids(&self, call: usize) -> (Value, Value, Value) {
        (
            Value::str(&format!("{}-{call}@rtp-load", self.run)),
            Value::str(&format!("f{call}")),
            Value::str(&format!("t{call}")),
        )
    }

    /// Offer and answer for one call: the caller end at `caller`, the far end
    /// at `far`. Returns where each end must send.
    pub fn setup(
        &mut self,
        call: usize,
        caller: SocketAddr,
        far: SocketAddr,
    ) -> Result<CallPath, NgError> {
        let (call_id, from_tag, to_tag) = self.ids(call);
        let offer = self.request(
            "offer",
            vec![
                ("call-id", call_id.clone()),
                ("from-tag", from_tag.clone()),
                ("sdp", Value::str(&sdp(&format!("load{call}"), caller))),
            ],
        )?;
        let far_dst = offer
            .get("sdp")
            .and_then(Value::bytes)
            .and_then(sdp_addr)
            .ok_or(NgError::NoSdp("offer"))?;
        let answer = self.request(
            "answer",
            vec![
                ("call-id", call_id),
                ("from-tag", from_tag),
                ("to-tag", to_tag),
                ("sdp", Value::str(&sdp(&format!("agent{call}"), far))),
            ],
        )?;
        let caller_dst = answer
            .get("sdp")
            .and_then(Value::bytes)
            .and_then(sdp_addr)
            .ok_or(NgError::NoSdp("answer"))?;
        Ok(CallPath {
            caller_dst,
            far_dst,
        })
    }

    pub fn delete(&mut self, call: usize) -> Result<(), NgError> {
        let (call_id, from_tag, _) = self.ids(call);
        self.request("delete", vec![("call-id", call_id), ("from-tag", from_tag)])
            .map(drop)
    }

    /// The SRTP load (issue 14): one load call as a chain of two rtpengine
    /// calls, plain -> SRTP in the first, SRTP -> plain in the second (with
    /// `srtp`; both plain without), the SDP each returns handed verbatim to
    /// the other, `a=crypto` lines and all, as a proxy between two
    /// rtpengine-anchored legs would. Every packet is relayed twice and,
    /// with `srtp`, encrypted once and decrypted once: the same work as
    /// handoff's chain (bench/rtp_load/host.rs).
    pub fn setup_chain(
        &mut self,
        call: usize,
        caller: SocketAddr,
        far: SocketAddr,
        srtp: bool,
    ) -> Result<CallPath, NgError> {
        let (call_id, from_tag, to_tag) = self.ids(call);
        let id = |leg: &str| match &call_id {
            Value::Bytes(b) => Value::Bytes([b.as_slice(), leg.as_bytes()].concat()),
            other => other.clone(),
        };
        let protocol = |p: &str| -> Vec<(&'static str, Value)> {
            if srtp {
                vec![("transport-protocol", Value::str(p))]
            } else {
                Vec::new()
            }
        };
        let sdp_of = |v: &Value, what: &'static str| -> Result<Value, NgError> {
            v.get("sdp").cloned().ok_or(NgError::NoSdp(what))
        };
        let mut pairs = vec![
            ("call-id", id("-a")),
            ("from-tag", from_tag.clone()),
            ("sdp", Value::str(&sdp(&format!("load{call}"), caller))),
        ];
        pairs.extend(protocol("RTP/SAVP"));
        let offer_a = self.request("offer", pairs)?;
        let mut pairs = vec![
            ("call-id", id("-b")),
            ("from-tag", from_tag.clone()),
            ("sdp", sdp_of(&offer_a, "offer")?),
        ];
        pairs.extend(protocol("RTP/AVP"));
        let offer_b = self.request("offer", pairs)?;
        let far_dst = offer_b
            .get("sdp")
            .and_then(Value::bytes)
            .and_then(sdp_addr)
            .ok_or(NgError::NoSdp("offer"))?;
        let answer_b = self.request(
            "answer",
            vec![
                ("call-id", id("-b")),
                ("from-tag", from_tag.clone()),
                ("to-tag", to_tag.clone()),
                ("sdp", Value::str(&sdp(&format!("agent{call}"), far))),
            ],
        )?;
        let answer_a = self.request(
            "answer",
            vec![
                ("call-id", id("-a")),
                ("from-tag", from_tag),
                ("to-tag", to_tag),
                ("sdp", sdp_of(&answer_b, "answer")?),
            ],
        )?;
        let caller_dst = answer_a
            .get("sdp")
            .and_then(Value::bytes)
            .and_then(sdp_addr)
            .ok_or(NgError::NoSdp("answer"))?;
        Ok(CallPath {
            caller_dst,
            far_dst,
        })
    }

    pub fn delete_chain(&mut self, call: usize) -> Result<(), NgError> {
        let (call_id, from_tag, _) = self.ids(call);
        for leg in ["-a", "-b"] {
            let id = match &call_id {
                Value::Bytes(b) => Value::Bytes([b.as_slice(), leg.as_bytes()].concat()),
                other => other.clone(),
            };
            self.request(
                "delete",
                vec![("call-id", id), ("from-tag", from_tag.clone())],
            )?;
        }
        Ok(())
    }
}

/// `setup_all` for the two-call chains of the SRTP load.
pub fn setup_all_chains(
    ng: &mut Ng,
    calls: usize,
    ep: &Endpoints,
    srtp: bool,
) -> (Vec<CallPath>, Vec<usize>, Vec<String>) {
    let mut paths = Vec::new();
    let mut idx = Vec::new();
    let mut errors = Vec::new();
    for c in 0..calls {
        match ng.setup_chain(c, ep.caller_addr(c), ep.far_addr(c), srtp) {
            Ok(p) => {
                paths.push(p);
                idx.push(c);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (paths, idx, errors)
}

/// Set up `calls` calls; the ones that failed are reported, not retried.
pub fn setup_all(
    ng: &mut Ng,
    calls: usize,
    ep: &Endpoints,
) -> (Vec<CallPath>, Vec<usize>, Vec<String>) {
    let mut paths = Vec::new();
    let mut idx = Vec::new();
    let mut errors = Vec::new();
    for c in 0..calls {
        match ng.setup(c, ep.caller_addr(c), ep.far_addr(c)) {
            Ok(p) => {
                paths.push(p);
                idx.push(c);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (paths, idx, errors)
}

fn sdp(user: &str, media: SocketAddr) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = media.ip(),
        port = media.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip() {
        let v = dict(&[
            ("command", Value::str("offer")),
            ("n", Value::Int(-3)),
            ("flags", Value::List(vec![Value::str("a"), Value::str("")])),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, b"d7:command5:offer5:flagsl1:a0:e1:ni-3ee");
        assert_eq!(Value::decode(&out), Some((v, &b""[..])));
    }
}
