//! The files served at `/`: embedded in the binary from `static/` at build
//! time, or read from `--static-dir` at request time. Touches only the file
//! system below that directory.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/static");

/// A file ready to send.
pub(crate) struct Asset {
    pub body: Cow<'static, [u8]>,
    pub content_type: String,
}

/// Where files come from.
#[derive(Debug, Clone)]
pub(crate) enum Assets {
    Embedded,
    Dir(PathBuf),
}

impl Assets {
    pub(crate) fn new(dir: Option<&Path>) -> std::io::Result<Self> {
        match dir {
            // Canonical once, so that the escape check below compares like with like.
            Some(dir) => Ok(Assets::Dir(dir.canonicalize()?)),
            None => Ok(Assets::Embedded),
        }
    }

    /// Finds `path` (already free of `..` segments, see `http::route`).
    pub(crate) fn get(&self, path: &str) -> Option<Asset> {
        let body = match self {
            Assets::Embedded => Cow::Borrowed(EMBEDDED.get_file(path)?.contents()),
            Assets::Dir(root) => {
                // canonicalize resolves symlinks: a link out of the root is refused too.
                let full = root.join(path).canonicalize().ok()?;
                if !full.starts_with(root) || !full.is_file() {
                    return None;
                }
                Cow::Owned(std::fs::read(full).ok()?)
            }
        };
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let content_type = match mime.type_() {
            mime_guess::mime::TEXT => format!("{mime}; charset=utf-8"),
            _ if mime.subtype() == "javascript" || mime.subtype() == "json" => {
                format!("{mime}; charset=utf-8")
            }
            _ => mime.to_string(),
        };
        Some(Asset { body, content_type })
    }
}
