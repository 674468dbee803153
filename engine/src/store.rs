//! Object storage: turning user URLs (local paths, file://, s3://, gs://, az://, http(s)://)
//! into an `ObjectStore` and a path, listing inputs given as a file, a directory or a
//! glob, and the process-wide tokio runtime that drives the async I/O from timely's
//! synchronous worker threads.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// The process-wide runtime for storage I/O. Two threads: I/O here is mostly waiting,
/// and the CPU belongs to timely's workers.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("synpref-io")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// Runs a future to completion on the I/O runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// A location in object storage: a store plus a path in it, and the text the user gave.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The URL as shown to the user in messages and manifests.
    pub url: String,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Parses a URL or a local path into a store and a path. Local paths need not exist.
pub fn resolve(input: &str) -> Result<Location> {
    let url = to_url(input)?;
    // Credentials and endpoints come from the usual environment variables
    // (AWS_*, GOOGLE_*, AZURE_*); other variables are not offered to the builders.
    let mut options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    if url.scheme() == "http" {
        // The user named a plain-HTTP URL; object_store's client refuses one unless
        // told (its default is HTTPS only).
        options.push(("allow_http".into(), "true".into()));
    }
    let (store, path) = object_store::parse_url_opts(&url, options)
        .map_err(|e| Error::setting(input, format!("cannot open storage for this URL: {e}")))?;
    Ok(Location {
        store: Arc::from(store),
        path,
        url: display_url(input, &url),
    })
}

fn display_url(input: &str, url: &Url) -> String {
    if url.scheme() == "file" && !input.starts_with("file:") {
        input.to_string()
    } else {
        url.to_string()
    }
}

fn to_url(input: &str) -> Result<Url> {
    if input.is_empty() {
        return Err(Error::setting("url", "empty URL or path"));
    }
    if let Ok(url) = Url::parse(input) {
        if url.scheme().len() > 1 {
            return Ok(url);
        }
    }
    // A local path: make it absolute without requiring it to exist (outputs may not).
    let p = std::path::Path::new(input);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::other("current directory", e))?
            .join(p)
    };
    let abs = normalise_path(&abs);
    // Glob characters must survive as literal path text for the listing below.
    let mut url = Url::parse("file:///").expect("static URL");
    url.set_path(&abs.to_string_lossy());
    Ok(url)
}

fn normalise_path(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Location {
    /// A child location (`dir/name`).
    pub fn child(&self, name: &str) -> Location {
        let mut path = self.path.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        let url = format!("{}/{}", self.url.trim_end_matches('/'), name);
        Location {
            store: self.store.clone(),
            path,
            url,
        }
    }

    pub fn put(&self, bytes: Vec<u8>) -> Result<()> {
        block_on(self.store.put(&self.path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| Error::Storage {
                path: self.url.clone(),
                source: e,
            })
    }

    /// Writes a new object in one atomic put that fails if the object already exists
    /// (two writers of one log cannot overwrite each other's entries), and returns only
    /// once the bytes are durable: on local disk the file and its directory are
    /// fsynced, since the store's rename alone survives a process kill but not a power
    /// loss; remote stores acknowledge a put only once it is stored.
    pub fn put_new_durable(&self, bytes: Vec<u8>) -> Result<()> {
        let opts = object_store::PutOptions::from(object_store::PutMode::Create);
        block_on(
            self.store
                .put_opts(&self.path, PutPayload::from(bytes), opts),
        )
        .map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => Error::other(
                &self.url,
                "already exists: another process is writing to this log",
            ),
            other => Error::Storage {
                path: self.url.clone(),
                source: other,
            },
        })?;
        if let Some(local) = self.local_path() {
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&local)
                .and_then(|_| local.parent().map(sync).unwrap_or(Ok(())))
                .map_err(|e| Error::other(&self.url, format!("cannot fsync: {e}")))?;
        }
        Ok(())
    }

    /// The file behind this location when the store is the local file system.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        self.store
            .to_string()
            .starts_with("LocalFileSystem")
            .then(|| std::path::PathBuf::from(format!("/{}", self.path.as_ref())))
    }

    pub fn get(&self) -> Result<Bytes> {
        block_on(async { self.store.get(&self.path).await?.bytes().await })
            .map_err(|e| self.read_error(e))
    }

    /// The object's bytes, or `None` when there is no such object.
    pub fn get_if_exists(&self) -> Result<Option<Bytes>> {
        match block_on(async { self.store.get(&self.path).await?.bytes().await }) {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.read_error(e)),
        }
    }

    pub fn get_range(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        block_on(self.store.get_range(&self.path, range)).map_err(|e| self.read_error(e))
    }

    /// Whether the object exists (a HEAD request).
    pub fn exists(&self) -> Result<bool> {
        match block_on(self.store.head(&self.path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.read_error(e)),
        }
    }

    pub fn size(&self) -> Result<u64> {
        block_on(self.store.head(&self.path))
            .map(|m| m.size)
            .map_err(|e| self.read_error(e))
    }

    fn read_error(&self, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::bad_file(&self.url, "file not found"),
            other => Error::Storage {
                path: self.url.clone(),
                source: other,
            },
        }
    }

    /// Deletes every object under this prefix (used to clear a previous run's output).
    pub fn delete_prefix(&self) -> Result<()> {
        block_on(async {
            let metas: Vec<_> = self.store.list(Some(&self.path)).try_collect().await?;
            for m in metas {
                match self.store.delete(&m.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| Error::Storage {
            path: self.url.clone(),
            source: e,
        })
    }

    /// Deletes everything under this prefix. On the local file system the directory
    /// goes as a whole, with the in-progress files object_store leaves beside an
    /// interrupted write (`name#N`), which its listing skips.
    pub fn delete_tree(&self) -> Result<()> {
        match self.local_path() {
            Some(dir) => match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    std::fs::remove_file(&dir).map_err(|e| Error::other(&self.url, e))
                }
                Err(e) => Err(Error::other(&self.url, format!("cannot remove: {e}"))),
            },
            None => self.delete_prefix(),
        }
    }

    /// Moves this object to `to` (one rename on the local file system; a copy and a
    /// delete on object stores).
    pub fn rename_to(&self, to: &Location) -> Result<()> {
        block_on(self.store.rename(&self.path, &to.path)).map_err(|e| Error::Storage {
            path: format!("{} -> {}", self.url, to.url),
            source: e,
        })
    }

    /// Copies this object to `to`, replacing it (on object stores a server-side copy,
    /// which readers of `to` see whole or not at all).
    pub fn copy_to(&self, to: &Location) -> Result<()> {
        block_on(self.store.copy(&self.path, &to.path)).map_err(|e| Error::Storage {
            path: format!("{} -> {}", self.url, to.url),
            source: e,
        })
    }

    pub fn delete(&self) -> Result<()> {
        match block_on(self.store.delete(&self.path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Storage {
                path: self.url.clone(),
                source: e,
            }),
        }
    }

    /// Relative names of the objects under this prefix, sorted.
    pub fn list_names(&self) -> Result<Vec<String>> {
        Ok(self.list_sizes()?.into_iter().map(|(n, _)| n).collect())
    }

    /// Relative names and sizes in bytes of the objects under this prefix, sorted by
    /// name.
    pub fn list_sizes(&self) -> Result<Vec<(String, u64)>> {
        let prefix = self.path.clone();
        let metas: Vec<_> = block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| Error::Storage {
                path: self.url.clone(),
                source: e,
            })?;
        let base = prefix.as_ref().len();
        let mut names: Vec<(String, u64)> = metas
            .iter()
            .map(|m| {
                (
                    m.location.as_ref()[base..]
                        .trim_start_matches('/')
                        .to_string(),
                    m.size,
                )
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The store (scheme and authority) and path segments an input or output names; for
/// a glob, the directories before its first glob character. A local path is taken
/// as the file system resolves it (`resolve_local`): every symlink on its existing part
/// followed, and a `..` after a link going to the link target's parent, so that a link
/// cannot make an output look apart from the input it points into.
fn prefix_of(input: &str) -> Result<(String, Vec<String>)> {
    let url = to_url(input)?;
    let store = format!("{}://{}", url.scheme(), url.authority());
    if url.scheme() == "file" {
        // The path as given (`to_url` removes `..` as text, which a link defeats).
        let given = match Url::parse(input) {
            Ok(u) if u.scheme().len() > 1 => u.to_file_path().ok(),
            _ => std::env::current_dir().ok().map(|cwd| cwd.join(input)),
        };
        if let Some(path) = given {
            return Ok((store, resolve_local(&path)));
        }
    }
    let mut segments: Vec<String> = url
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .collect();
    if let Some(first_glob) = segments.iter().position(|s| has_glob(s)) {
        segments.truncate(first_glob);
    }
    Ok((store, segments))
}

/// The segments of the absolute `path` as the file system resolves them, up to its
/// first glob component: each existing prefix canonicalised (symlinks followed), `..`
/// taken from there, and the part that does not exist yet appended as written.
fn resolve_local(path: &std::path::Path) -> Vec<String> {
    use std::path::{Component, PathBuf};
    let mut resolved = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                if has_glob(&name.to_string_lossy()) {
                    break;
                }
                resolved.push(name);
                if let Ok(canonical) = resolved.canonicalize() {
                    resolved = canonical;
                }
            }
            Component::ParentDir => {
                resolved.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    resolved
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Refuses an output location that is, lies inside, or contains an input: a run
/// would read its own output as input, or clear its input as a previous output.
/// `inputs` are (flag, URL) pairs; the error names both flags.
pub fn check_output_apart(out_flag: &str, out: &str, inputs: &[(&str, &str)]) -> Result<()> {
    let (out_store, out_path) = prefix_of(out)?;
    for (flag, input) in inputs {
        let (store, path) = prefix_of(input)?;
        if store != out_store {
            continue;
        }
        let shared = out_path
            .iter()
            .zip(&path)
            .take_while(|(a, b)| a == b)
            .count();
        let relation = if shared == out_path.len() && shared == path.len() {
            "is"
        } else if shared == path.len() {
            "lies inside"
        } else if shared == out_path.len() {
            "contains"
        } else {
            continue;
        };
        return Err(Error::setting(
            out_flag,
            format!(
                "`{out}` {relation} the input {flag} `{input}`: a run would read its own output or delete its input; \
                 choose an output location apart from every input"
            ),
        ));
    }
    Ok(())
}

/// A local path with its symbolic links resolved (as the file system resolves it now),
/// so that a reader that opens several files under it reads one directory throughout
/// even if a link on the way is replaced meanwhile (serve's `snapshot`); any other
/// URL, or a path that does not exist, as given.
pub fn pin_local(url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    std::fs::canonicalize(url)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| url.to_string())
}

/// [`check_output_apart`] for each of a command's outputs (`--out`, a cache it writes)
/// against all of its inputs: the one guard every writing command calls before it
/// reads or deletes anything.
pub fn check_outputs_apart(outputs: &[(&str, &str)], inputs: &[(&str, &str)]) -> Result<()> {
    for (flag, out) in outputs {
        check_output_apart(flag, out, inputs)?;
    }
    Ok(())
}

/// One input file found by [`list_inputs`].
#[derive(Clone, Debug)]
pub struct InputFile {
    pub location: Location,
    pub size: u64,
}

/// Expands an input URL (a file, a directory or a glob) into its files, sorted by path.
/// Directories are walked recursively; hidden files and files starting with `_` are
/// skipped, and only names accepted by `accept` are kept.
pub fn list_inputs(input: &str, accept: &dyn Fn(&str) -> bool) -> Result<Vec<InputFile>> {
    let loc = resolve(input)?;
    let path_text = loc.path.as_ref().to_string();
    let glob_pattern = if has_glob(input) {
        Some(path_text.clone())
    } else {
        None
    };
    let mut files = Vec::new();
    if glob_pattern.is_none() {
        match block_on(loc.store.head(&loc.path)) {
            Ok(meta) => {
                return Ok(vec![InputFile {
                    location: loc,
                    size: meta.size,
                }])
            }
            // Plain HTTP servers cannot list (object_store lists over WebDAV): an
            // http(s) input is one file, and its error is the answer.
            Err(e) if input.starts_with("http://") || input.starts_with("https://") => {
                return Err(loc.read_error(e));
            }
            Err(_) => {}
        }
    }
    // Directory or glob: list from the longest prefix without glob characters.
    let prefix: Path = match &glob_pattern {
        Some(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            let fixed: Vec<&str> = parts.iter().take_while(|s| !has_glob(s)).cloned().collect();
            Path::from(fixed.join("/"))
        }
        None => loc.path.clone(),
    };
    let matcher = match &glob_pattern {
        Some(p) => Some(
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::setting(input, format!("bad glob pattern: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    let metas: Vec<_> =
        block_on(loc.store.list(Some(&prefix)).try_collect::<Vec<_>>()).map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::NoInput {
                url: input.to_string(),
                message: "not found".into(),
            },
            other => Error::Storage {
                path: input.to_string(),
                source: other,
            },
        })?;
    for m in metas {
        let p = m.location.as_ref();
        let name = p.rsplit('/').next().unwrap_or(p);
        if name.starts_with('.') || name.starts_with('_') || !accept(name) {
            continue;
        }
        if let Some(matcher) = &matcher {
            if !matcher.is_match(p) {
                continue;
            }
        }
        let rel = &p[prefix.as_ref().len()..];
        let base_url = if glob_pattern.is_some() {
            // A readable URL: the user's text up to the directory holding the first glob
            // character, then the rest of the object's path.
            let cut = input.find(['*', '?', '[', '{']).unwrap_or(input.len());
            let head = &input[..cut];
            let head = &head[..head.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!("{}{}", head, rel.trim_start_matches('/'))
        } else {
            format!(
                "{}/{}",
                loc.url.trim_end_matches('/'),
                rel.trim_start_matches('/')
            )
        };
        files.push(InputFile {
            location: Location {
                store: loc.store.clone(),
                path: m.location.clone(),
                url: base_url,
            },
            size: m.size,
        });
    }
    files.sort_by(|a, b| a.location.path.as_ref().cmp(b.location.path.as_ref()));
    if files.is_empty() {
        return Err(Error::NoInput {
            url: input.to_string(),
            message: "no .parquet or .jsonl files at this path, directory or glob".into(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::check_output_apart;

    /// Issue 30: the guard compared paths as spelled, so an output reached through a
    /// symlink (or an input given through one) wrote into, and a rerun deleted, the
    /// input.
    #[test]
    fn an_output_through_a_symlink_into_an_input_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pairs = tmp.path().join("data/pairs");
        std::fs::create_dir_all(&pairs).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&pairs, &link).unwrap();
        let to_data = tmp.path().join("to_data");
        std::os::unix::fs::symlink(tmp.path().join("data"), &to_data).unwrap();
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let refused = |out: String, input: String| {
            let e = check_output_apart("--out", &out, &[("--pairs", &input)]);
            e.expect_err(&format!("--out {out} --pairs {input} must be refused"))
                .to_string()
        };
        assert!(refused(s(&link), s(&pairs)).contains("is the input"));
        let inside = s(&to_data.join("pairs/o"));
        assert!(refused(inside, s(&pairs)).contains("lies inside"));
        let o2 = s(&pairs.join("o2"));
        assert!(refused(o2, s(&link)).contains("lies inside"));
        // `..` through a link resolves where the file system takes it.
        let dotted = format!("{}/../pairs", s(&link));
        assert!(refused(dotted, s(&pairs)).contains("is the input"));
        // Apart stays apart, whether the output exists or not.
        let apart = s(&tmp.path().join("out/new"));
        assert!(check_output_apart("--out", &apart, &[("--pairs", &s(&link))]).is_ok());
    }
}
