//! nginx, as the reverse proxy under test and optionally as the upstream:
//! started in the foreground (`daemon off`) with a generated nginx.conf, its
//! workers found in /proc, since the master only supervises and the
//! workers do (and are charged for) the work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::procs::{version_line, ChildGuard};

/// A running nginx, stopped (master and workers) when dropped.
pub(crate) struct Nginx {
    pub(crate) process: ChildGuard,
    /// `nginx version: nginx/1.22.1`.
    pub(crate) version: String,
}

impl Nginx {
    /// Writes `conf` (rendered for `dir`) to `dir/nginx.conf` and starts
    /// nginx on it; its error log goes to `dir/error.log`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        dir: &Path,
        conf: &str,
    ) -> Result<Self, String> {
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).map_err(|e| format!("{}: {e}", file.display()))?;
        // `-e`: the error log before the config is read (the compiled-in
        // one may not be writable); `-p`: relative paths resolve in `dir`.
        let mut prefix = dir.as_os_str().to_owned();
        prefix.push("/");
        let error_log = dir.join("error.log");
        let args = [
            "-p".as_ref(),
            prefix.as_os_str(),
            "-c".as_ref(),
            file.as_os_str(),
            "-e".as_ref(),
            error_log.as_os_str(),
        ];
        let log = dir.join("log");
        let process =
            ChildGuard::spawn(name, program, args, &[], &log).map_err(|e| e.to_string())?;
        let version = version_line(program, &["-v"]).unwrap_or_else(|| "nginx".into());
        Ok(Self { process, version })
    }

    /// The master and its `workers` worker processes, once they are all up
    /// (at most 2 s after the master serves).
    pub(crate) async fn pids(&self, workers: usize) -> Result<Vec<u32>, String> {
        let master = self.process.pid();
        for _ in 0..40 {
            let children = children_of(master);
            if children.len() >= workers {
                return Ok([vec![master], children].concat());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "nginx (pid {master}) has not started its {workers} worker(s)\n  {}",
            self.process.log_tail()
        ))
    }
}

/// The processes whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent_of(child) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state, ppid, …
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The `*_temp_path` directives this nginx knows, from the
/// `--http-*-temp-path` options it was built with: every one is set to a
/// directory under the scratch directory, because the compiled-in ones
/// (`/var/lib/nginx/…`) are not writable except by root.
pub(crate) fn temp_paths(program: &Path) -> Vec<&'static str> {
    let built_with = std::process::Command::new(program)
        .arg("-V")
        .output()
        .map(|out| String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned())
        .unwrap_or_default();
    [
        ("client-body", "client_body"),
        ("proxy", "proxy"),
        ("fastcgi", "fastcgi"),
        ("uwsgi", "uwsgi"),
        ("scgi", "scgi"),
    ]
    .into_iter()
    .filter(|(option, _)| built_with.contains(&format!("--http-{option}-temp-path")))
    .map(|(_, directive)| directive)
    .collect()
}

/// `nginx` resolved against PATH, then in `/usr/sbin` (where Debian puts
/// it, and which a non-root PATH often lacks).
pub(crate) fn find(program: &Path) -> Option<PathBuf> {
    crate::procs::find_program(program).or_else(|| {
        let sbin = Path::new("/usr/sbin").join(program);
        (program.components().count() == 1 && sbin.is_file()).then_some(sbin)
    })
}
