//! Serialisation: RFC 4566 line order, CRLF line ends.

use std::fmt;

use super::{Attribute, Connection, SessionDescription};

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = if self.address.is_ipv4() { "IP4" } else { "IP6" };
        write!(f, "IN {family} {}", self.address)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// RFC 4566 5: v o s i u e p c b (t r) z k a, then each m i c b k a.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        f.write_str("v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.version, o.net_type, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        line(f, 'i', self.information.as_ref())?;
        line(f, 'u', self.uri.as_ref())?;
        lines(f, 'e', &self.emails)?;
        lines(f, 'p', &self.phones)?;
        line(f, 'c', self.connection.as_ref())?;
        lines(f, 'b', &self.bandwidths)?;
        for t in &self.timings {
            write!(f, "t={}\r\n", t.value)?;
            lines(f, 'r', &t.repeats)?;
        }
        line(f, 'z', self.time_zones.as_ref())?;
        line(f, 'k', self.encryption_key.as_ref())?;
        lines(f, 'a', &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.proto)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            f.write_str("\r\n")?;
            line(f, 'i', m.information.as_ref())?;
            line(f, 'c', m.connection.as_ref())?;
            lines(f, 'b', &m.bandwidths)?;
            line(f, 'k', m.encryption_key.as_ref())?;
            lines(f, 'a', &m.attributes)?;
        }
        Ok(())
    }
}

fn line(f: &mut fmt::Formatter<'_>, kind: char, value: Option<&impl fmt::Display>) -> fmt::Result {
    match value {
        Some(v) => write!(f, "{kind}={v}\r\n"),
        None => Ok(()),
    }
}

fn lines(f: &mut fmt::Formatter<'_>, kind: char, values: &[impl fmt::Display]) -> fmt::Result {
    values.iter().try_for_each(|v| write!(f, "{kind}={v}\r\n"))
}
