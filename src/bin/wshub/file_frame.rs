//! The file-transfer message of the chat: one binary message laid out as
//! `[u16 little-endian name length][UTF-8 name][file bytes]` — the format
//! the chat page and `wshub client` both speak. Pure functions; no I/O
//! except [`save`], which writes only inside the directory it is given.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a binary message is not a file frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer than the two length bytes.
    TooShort,
    /// The name length runs past the end of the message.
    NamePastEnd,
    /// The name is not UTF-8.
    NameNotUtf8,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Malformed::TooShort => "malformed file frame: too short",
            Malformed::NamePastEnd => "malformed file frame: name length past the end",
            Malformed::NameNotUtf8 => "malformed file frame: name is not UTF-8",
        })
    }
}

/// Builds a file frame. Names longer than 65535 bytes are cut at a
/// character boundary.
pub fn encode(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut end = name.len().min(u16::MAX as usize);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    let mut out = Vec::with_capacity(2 + name.len() + contents.len());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(contents);
    out
}

/// Splits a file frame into its name and contents.
pub fn decode(message: &[u8]) -> Result<(&str, &[u8]), Malformed> {
    let (len, rest) = message
        .split_first_chunk::<2>()
        .ok_or(Malformed::TooShort)?;
    let len = u16::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return Err(Malformed::NamePastEnd);
    }
    let (name, contents) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| Malformed::NameNotUtf8)?;
    Ok((name, contents))
}

/// A safe file name from a peer's: the last path component, without
/// control characters, never empty, `.` or `..`, at most 200 bytes.
pub fn sanitize(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let mut end = clean.len().min(200);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean.truncate(end);
    let clean = clean.trim().trim_start_matches('.').to_string();
    if clean.is_empty() {
        "file".to_string()
    } else {
        clean
    }
}

/// Writes `contents` into `dir` under the sanitised `name`, never
/// overwriting: `name`, then `name (1)`, `name (2)`, … Returns the path.
pub fn save(dir: &Path, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
    let clean = sanitize(name);
    let (stem, ext) = match clean.rfind('.') {
        Some(i) if i > 0 => (&clean[..i], &clean[i..]),
        _ => (clean.as_str(), ""),
    };
    for n in 0..1000 {
        let candidate = if n == 0 {
            clean.clone()
        } else {
            format!("{stem} ({n}){ext}")
        };
        let path = dir.join(candidate);
        // create_new: an existing file (or a link planted there) is never touched.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(contents)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("too many files named {clean:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frame = encode("café menu.pdf", b"\x00\x01data");
        assert_eq!(&frame[..2], &[14, 0]);
        assert_eq!(decode(&frame), Ok(("café menu.pdf", &b"\x00\x01data"[..])));
        assert_eq!(decode(&encode("", b"")), Ok(("", &b""[..])));
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(b""), Err(Malformed::TooShort));
        assert_eq!(decode(b"\x05"), Err(Malformed::TooShort));
        assert_eq!(decode(b"\x05\x00abc"), Err(Malformed::NamePastEnd));
        assert_eq!(decode(b"\x02\x00\xff\xfe"), Err(Malformed::NameNotUtf8));
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize("../x"), "x");
        assert_eq!(sanitize("..\\..\\windows\\evil.dll"), "evil.dll");
        assert_eq!(sanitize(".."), "file");
        assert_eq!(sanitize("/etc/"), "file");
        assert_eq!(sanitize(".bashrc"), "bashrc");
        assert_eq!(sanitize("a\nb\u{0}c.txt"), "abc.txt");
        assert_eq!(sanitize("naïve résumé.txt"), "naïve résumé.txt");
    }
}
