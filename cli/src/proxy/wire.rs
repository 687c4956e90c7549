//! DNS messages (RFC 1035), as much as the DNS proxy reads and writes: a query's question,
//! a REFUSED answer to it, and the address records of a response. Every read is bounds
//! checked; anything that does not parse is `None`, never a panic.

/// The header's length.
pub const HEADER: usize = 12;
/// `A`.
pub const TYPE_A: u16 = 1;
/// `AAAA`.
pub const TYPE_AAAA: u16 = 28;
/// `FORMERR`.
pub const RCODE_FORMERR: u8 = 1;
/// `NXDOMAIN`.
pub const RCODE_NXDOMAIN: u8 = 3;
/// `SERVFAIL`.
pub const RCODE_SERVFAIL: u8 = 2;
/// `REFUSED`.
pub const RCODE_REFUSED: u8 = 5;
/// Label pointers followed at most (a loop of pointers ends here).
const MAX_POINTERS: usize = 32;

/// The question of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The message ID.
    pub id: u16,
    /// The name, lower case, with the trailing dot (`.` for the root).
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// Where the question ends (the first byte after QCLASS).
    pub end: usize,
}

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]))
}

fn u32_at(m: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *m.get(at)?,
        *m.get(at + 1)?,
        *m.get(at + 2)?,
        *m.get(at + 3)?,
    ]))
}

/// Reads the name at `at`; returns it (lower case, trailing dot) and where the name's bytes
/// end in place (after a pointer, the pointer's end).
pub fn name_at(m: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *m.get(at)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    if name.is_empty() {
                        name.push('.');
                    }
                    return Some((name, end.unwrap_or(at + 1)));
                }
                let label = m.get(at + 1..at + 1 + usize::from(len))?;
                for &b in label {
                    // A name the proxy compares is printable; escape anything else so it
                    // matches no rule by accident.
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        name.push(char::from(b.to_ascii_lowercase()));
                    } else {
                        name.push_str(&format!("\\{b:03}"));
                    }
                }
                name.push('.');
                if name.len() > 1024 {
                    return None;
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                let target = usize::from(u16_at(m, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
}

/// The question of a standard query with exactly one question, or `None`.
pub fn query(m: &[u8]) -> Option<Question> {
    let id = u16_at(m, 0)?;
    let flags = u16_at(m, 2)?;
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    if qr || opcode != 0 || u16_at(m, 4)? != 1 {
        return None;
    }
    let (name, at) = name_at(m, HEADER)?;
    let qtype = u16_at(m, at)?;
    u16_at(m, at + 2)?;
    Some(Question {
        id,
        name,
        qtype,
        end: at + 4,
    })
}

/// The answer with `rcode` and no records to `query` (whose question is `q`): the header
/// and the question, as Cilium's proxy answers a refused name.
pub fn answer_with(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut out = query[..q.end.min(query.len())].to_vec();
    // QR, the query's opcode and RD, RA, rcode.
    let rd = query[2] & 0x01;
    out[2] = 0x80 | (query[2] & 0x78) | rd;
    out[3] = 0x80 | (rcode & 0x0f);
    // One question, no records.
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out
}

/// The `FORMERR` answer to a message that has a query's header but no question the proxy
/// can read: the header alone, with the message's ID; `None` without a query's header.
pub fn format_error(m: &[u8]) -> Option<Vec<u8>> {
    let header = m.get(..HEADER)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let mut out = header.to_vec();
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = RCODE_FORMERR;
    out[4..12].copy_from_slice(&[0; 8]);
    Some(out)
}

/// One address record of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The owner name (lower case, trailing dot).
    pub name: String,
    /// The address.
    pub ip: std::net::IpAddr,
    /// Seconds to live.
    pub ttl: u32,
}

/// The response's rcode and its answer section's A and AAAA records, or `None` when it is not
/// a response or does not parse.
pub fn response(m: &[u8]) -> Option<(u8, Vec<Address>)> {
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 {
        return None;
    }
    let rcode = (flags & 0x0f) as u8;
    let qd = u16_at(m, 4)?;
    let an = u16_at(m, 6)?;
    let mut at = HEADER;
    for _ in 0..qd {
        let (_, end) = name_at(m, at)?;
        at = end + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (name, end) = name_at(m, at)?;
        let rtype = u16_at(m, end)?;
        let ttl = u32_at(m, end + 4)?;
        let len = usize::from(u16_at(m, end + 8)?);
        let data = m.get(end + 10..end + 10 + len)?;
        let ip = match (rtype, data.len()) {
            (TYPE_A, 4) => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (TYPE_AAAA, 16) => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => None,
        };
        if let Some(ip) = ip {
            out.push(Address { name, ip, ttl });
        }
        at = end + 10 + len;
    }
    Some((rcode, out))
}

/// A query for `name` of `qtype` with `id` (recursion desired).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + name.len() + 6);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        m.push(bytes.len() as u8);
        m.extend_from_slice(bytes);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// The response to `query` (question `q`) with these address records (of the question's
/// name) and `rcode`.
pub fn build_response(
    query: &[u8],
    q: &Question,
    rcode: u8,
    ips: &[(std::net::IpAddr, u32)],
) -> Vec<u8> {
    let mut m = answer_with(query, q, rcode);
    let mut count = 0u16;
    for (ip, ttl) in ips {
        let (rtype, data): (u16, Vec<u8>) = match ip {
            std::net::IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            std::net::IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        // A pointer to the question's name.
        m.extend_from_slice(&[0xc0, HEADER as u8]);
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(&data);
        count += 1;
    }
    m[6..8].copy_from_slice(&count.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_reads_back_and_is_refused_with_its_question() {
        let q = build_query(0x1234, "API.Example.com", TYPE_A);
        let parsed = query(&q).unwrap();
        assert_eq!(parsed.name, "api.example.com.");
        assert_eq!(
            (parsed.id, parsed.qtype, parsed.end),
            (0x1234, TYPE_A, q.len())
        );
        let r = answer_with(&q, &parsed, RCODE_REFUSED);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
        assert_eq!(response(&r), Some((RCODE_REFUSED, Vec::new())));
        // A response is not a query.
        assert_eq!(query(&r), None);
    }

    #[test]
    fn responses_give_their_addresses_through_pointers() {
        let q = build_query(7, "db.shop", TYPE_A);
        let parsed = query(&q).unwrap();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let ip6: std::net::IpAddr = "2001:db8::7".parse().unwrap();
        let r = build_response(&q, &parsed, 0, &[(ip, 30), (ip6, 60)]);
        let (rcode, addrs) = response(&r).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(
            addrs,
            [
                Address {
                    name: "db.shop.".into(),
                    ip,
                    ttl: 30
                },
                Address {
                    name: "db.shop.".into(),
                    ip: ip6,
                    ttl: 60
                },
            ]
        );
    }

    #[test]
    fn hostile_messages_are_refused_without_panicking() {
        // Truncated everywhere.
        let q = build_query(1, "a.b.c", TYPE_AAAA);
        for n in 0..q.len() {
            assert_eq!(query(&q[..n]), None, "{n} bytes");
        }
        // A pointer loop.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
        assert_eq!(response(&m), None);
        // A record longer than the message.
        let parsed = query(&q).unwrap();
        let mut r = build_response(&q, &parsed, 0, &[("10.0.0.1".parse().unwrap(), 1)]);
        r.truncate(r.len() - 2);
        assert_eq!(response(&r), None);
        // A query's header with no readable question: FORMERR with its ID.
        let formerr = format_error(&q[..HEADER + 2]).unwrap();
        assert_eq!(&formerr[..2], &[0, 1]);
        assert_eq!(formerr[3], RCODE_FORMERR);
        assert_eq!(format_error(&formerr), None, "a response is not answered");
        assert_eq!(format_error(&q[..5]), None);
        // Odd bytes in a label cannot pass for a dot.
        let mut odd = build_query(1, "a", TYPE_A);
        odd[13] = b'.';
        assert_eq!(query(&odd).unwrap().name, "\\046.");
    }
}
