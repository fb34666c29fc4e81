//! What the system lets this process start: the thread budget, from every
//! limit of the kernel and the process that can refuse a thread, read once
//! when a server starts ([`thread_budget`]), and what the server refuses
//! at that ceiling, logged at most once a second ([`Refusals`]).
//!
//! The budget is a pure function of the [`Readings`] (so each limit can be
//! tested as the one that binds); only [`Readings::now`] reads the system.
//!
//! May touch: nothing but `/proc` and `/sys/fs/cgroup` (reading), the
//! `GLIBC_TUNABLES` variable (reading), and the log.

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};

use log::{info, warn};

use crate::Config;

/// Threads per WebSocket client: its reader (the connection's HTTP thread,
/// which goes on reading the WebSocket). Its writer starts only when the
/// client falls behind, from the share kept for writers.
pub(super) const THREADS_PER_CLIENT: usize = 1;

/// Of the threads above the HTTP slack, one in this many is kept for the
/// writers of clients that fall behind (at least `MIN_WRITERS`).
const WRITER_SHARE: usize = 32;

/// The fewest threads kept for writers.
const MIN_WRITERS: usize = 8;

/// Threads kept free of WebSocket clients at the ceiling, so that a few
/// HTTP requests (`/healthz`, `/metrics`, the 503s themselves) still get a
/// thread.
pub(super) const HTTP_SLACK: usize = 8;

/// Mappings never promised to threads: a thread whose stack was mapped but
/// whose alternate signal stack was not aborts the whole process
/// (rust-lang/rust#78497; 40 spare mappings aborted there, 42 did not).
const MAP_HEADROOM: usize = 64;

/// Mappings per live thread: the stack and its guard page, Rust's
/// alternate signal stack and its guard.
const MAPS_PER_THREAD: usize = 4;

/// Mappings per stack glibc keeps cached after its thread ends (the stack
/// and its guard; the signal stack is unmapped at exit).
const MAPS_PER_CACHED_STACK: usize = 2;

/// glibc's `glibc.pthread.stack_cache_size` unless `GLIBC_TUNABLES` says
/// otherwise: the bytes of ended threads' stacks it keeps mapped.
const GLIBC_STACK_CACHE_BYTES: usize = 40 << 20;

/// Threads of the server that are not connection threads (hub, fan-out
/// lanes, acceptors, the Redis bridge) and are not yet running when the
/// budget is read, and the host program's own: kept out of every limit.
const OWN_THREADS: usize = 32;

/// File descriptors kept for what is not a client: listeners, the log,
/// Redis, files served from `--static-dir`.
const OWN_FDS: usize = 32;

/// PIDs below this are not handed out again after `pid_max` wraps
/// (`RESERVED_PIDS` in the kernel).
const RESERVED_PIDS: usize = 300;

const PAGE: usize = 4096;

/// What the system said when the server started; `None` where there is
/// no such limit (or it could not be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Readings {
    /// `vm.max_map_count` (65530 when unreadable, the kernel's default).
    pub max_map_count: usize,
    /// Mappings this process has now (`/proc/self/maps`).
    pub maps: usize,
    /// The stack a connection thread asks for (`--thread-stack-bytes`).
    pub stack_bytes: usize,
    /// glibc's stack cache, in bytes.
    pub stack_cache_bytes: usize,
    /// CPUs: glibc keeps up to 8 malloc arenas (2 mappings each) per CPU.
    pub cpus: usize,
    /// `kernel.threads-max`.
    pub threads_max: Option<usize>,
    /// `kernel.pid_max`: every thread takes a PID.
    pub pid_max: Option<usize>,
    /// Threads running on the whole system now (`/proc/loadavg`).
    pub system_threads: usize,
    /// `RLIMIT_NPROC`'s soft limit, unless this process is exempt (root,
    /// `CAP_SYS_RESOURCE`, `CAP_SYS_ADMIN`).
    pub nproc: Option<usize>,
    /// This process's threads now (other processes of the same user also
    /// count against `RLIMIT_NPROC`; they are not read).
    pub own_threads: usize,
    /// The tightest cgroup `pids.max` (systemd's `TasksMax=`) on the way
    /// to the root, with that cgroup's `pids.current`.
    pub pids: Option<(usize, usize)>,
    /// `RLIMIT_NOFILE`'s soft limit: one descriptor per client.
    pub nofile: Option<usize>,
    /// Descriptors this process has open now.
    pub open_fds: usize,
    /// [`Config::max_threads`].
    pub max_threads: Option<usize>,
}

/// Which limit sets the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `vm.max_map_count`.
    MapCount,
    /// `kernel.threads-max`.
    ThreadsMax,
    /// `kernel.pid_max`.
    PidMax,
    /// `RLIMIT_NPROC`.
    Nproc,
    /// The cgroup's `pids.max`.
    PidsMax,
    /// `RLIMIT_NOFILE`.
    OpenFiles,
    /// `--max-threads`.
    MaxThreads,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MapCount => "vm.max_map_count",
            Limit::ThreadsMax => "kernel.threads-max",
            Limit::PidMax => "kernel.pid_max",
            Limit::Nproc => "RLIMIT_NPROC (ulimit -u)",
            Limit::PidsMax => "the cgroup's pids.max (systemd TasksMax)",
            Limit::OpenFiles => "RLIMIT_NOFILE (ulimit -n, systemd LimitNOFILE)",
            Limit::MaxThreads => "--max-threads",
        })
    }
}

/// The thread budget: how many connection threads the server may have
/// running at once, and the limit that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    /// Connection threads (HTTP connections, WebSocket readers and writers).
    pub threads: usize,
    /// The limit that binds.
    pub limit: Limit,
    /// That limit's value.
    pub value: usize,
}

impl Budget {
    /// About how many WebSocket clients fit: one thread each, and a share
    /// kept for the writers of those that fall behind.
    pub(super) fn clients(&self) -> usize {
        let above = self.threads.saturating_sub(HTTP_SLACK);
        let writers = (above / WRITER_SHARE).max(MIN_WRITERS).min(above);
        (above - writers) / THREADS_PER_CLIENT
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread budget {}: room for about {} WebSocket clients (limited by {} = {})",
            self.threads,
            self.clients(),
            self.limit,
            self.value
        )
    }
}

/// A server's thread budget, and what it refuses at it.
#[derive(Debug)]
pub(super) struct Ceiling {
    /// The budget, read once at start.
    pub budget: Budget,
    /// The refusals not yet logged.
    pub refusals: Refusals,
}

/// The budget for `config` on this system, logged in one line.
pub(super) fn thread_budget(config: &Config) -> Ceiling {
    let budget = budget(&Readings::now(config));
    info!("{budget}");
    Ceiling {
        budget,
        refusals: Refusals::default(),
    }
}

/// The smallest of what each limit leaves for connection threads; on a
/// tie, the first limit in [`Limit`]'s order is named.
pub(super) fn budget(r: &Readings) -> Budget {
    let stack = r.stack_bytes.div_ceil(PAGE) * PAGE + PAGE;
    let cached = r.stack_cache_bytes / stack.max(1) + 1;
    let arenas = 8 * r.cpus.max(1) * 2;
    let maps_kept = r.maps + MAP_HEADROOM + arenas + MAPS_PER_CACHED_STACK * cached;
    let by_maps = r.max_map_count.saturating_sub(maps_kept) / MAPS_PER_THREAD;
    let by_maps = by_maps.saturating_sub(OWN_THREADS);
    let left = |limit: usize, used: usize| limit.saturating_sub(used + OWN_THREADS);
    let candidates = [
        Some((by_maps, Limit::MapCount, r.max_map_count)),
        r.threads_max
            .map(|max| (left(max, r.system_threads), Limit::ThreadsMax, max)),
        r.pid_max.map(|max| {
            let room = left(max, r.system_threads + RESERVED_PIDS);
            (room, Limit::PidMax, max)
        }),
        r.nproc
            .map(|max| (left(max, r.own_threads), Limit::Nproc, max)),
        r.pids
            .map(|(max, current)| (left(max, current), Limit::PidsMax, max)),
        r.nofile.map(|max| {
            let clients = max.saturating_sub(r.open_fds + OWN_FDS);
            let writers = (clients / (WRITER_SHARE - 1)).max(MIN_WRITERS);
            let threads = clients.saturating_mul(THREADS_PER_CLIENT) + writers + HTTP_SLACK;
            (threads, Limit::OpenFiles, max)
        }),
        r.max_threads.map(|max| (max, Limit::MaxThreads, max)),
    ];
    let (threads, limit, value) = candidates
        .into_iter()
        .flatten()
        .reduce(|best, next| if next.0 < best.0 { next } else { best })
        .unwrap_or((by_maps, Limit::MapCount, r.max_map_count));
    Budget {
        threads,
        limit,
        value,
    }
}

impl Readings {
    /// Reads every limit for `config` from `/proc` and `/sys/fs/cgroup`.
    pub(super) fn now(config: &Config) -> Readings {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let count = |path: &str| std::fs::read_dir(path).map_or(0, Iterator::count);
        Readings {
            max_map_count: read_number("/proc/sys/vm/max_map_count").unwrap_or(65530),
            maps: std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count()),
            stack_bytes: config.thread_stack_bytes,
            stack_cache_bytes: stack_cache_bytes(std::env::var("GLIBC_TUNABLES").ok().as_deref()),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            threads_max: read_number("/proc/sys/kernel/threads-max"),
            pid_max: read_number("/proc/sys/kernel/pid_max"),
            system_threads: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| loadavg_threads(&l))
                .unwrap_or(0),
            nproc: soft_limit(&limits, "Max processes").filter(|_| !exempt_from_nproc(&status)),
            own_threads: status_field(&status, "Threads:").unwrap_or(1),
            pids: cgroup_pids(),
            nofile: soft_limit(&limits, "Max open files"),
            open_fds: count("/proc/self/fd"),
            max_threads: config.max_threads,
        }
    }
}

fn read_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The total of `/proc/loadavg`'s fourth field (`running/total`).
fn loadavg_threads(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// A soft limit from `/proc/self/limits` (`None`: unlimited or absent).
fn soft_limit(limits: &str, name: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// A number after `field` in `/proc/self/status`.
fn status_field(status: &str, field: &str) -> Option<usize> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether `RLIMIT_NPROC` does not apply: the real user is root, or the
/// process has `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN` (the kernel's
/// `copy_process`).
fn exempt_from_nproc(status: &str) -> bool {
    if status_field(status, "Uid:") == Some(0) {
        return true;
    }
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    caps & (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_RESOURCE) != 0
}

/// `glibc.pthread.stack_cache_size` from `GLIBC_TUNABLES` (decimal or
/// `0x` hex), or glibc's default.
fn stack_cache_bytes(tunables: Option<&str>) -> usize {
    let value = tunables.and_then(|t| {
        t.split(':')
            .find_map(|kv| kv.strip_prefix("glibc.pthread.stack_cache_size="))
    });
    let parse = |v: &str| match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => usize::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    };
    value.and_then(parse).unwrap_or(GLIBC_STACK_CACHE_BYTES)
}

/// The tightest `pids.max` from this process's cgroup up to the root
/// (cgroup v2, or v1's `pids` hierarchy), with its `pids.current`.
fn cgroup_pids() -> Option<(usize, usize)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (base, path) = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        match controllers {
            "pids" => Some(("/sys/fs/cgroup/pids", path)),
            "" => Some(("/sys/fs/cgroup", path)),
            _ => None,
        }
    })?;
    let mut tightest: Option<(usize, usize)> = None;
    let mut dir = Some(path.trim_end_matches('/'));
    while let Some(at) = dir {
        let max = read_number(&format!("{base}{at}/pids.max"));
        let current = read_number(&format!("{base}{at}/pids.current"));
        if let (Some(max), Some(current)) = (max, current)
            && tightest.is_none_or(|(m, c)| max.saturating_sub(current) < m.saturating_sub(c))
        {
            tightest = Some((max, current));
        }
        dir = at.rfind('/').map(|slash| &at[..slash]);
    }
    tightest
}

/// Refusals at the ceiling (503s, and sessions closed with 1013 for want
/// of a thread): counted, and logged at most once a second with the count
/// instead of once per connection. The first refusal after a quiet second
/// opens a window; whoever opened it logs the window's count when it ends
/// (see `Shared::refused`).
#[derive(Debug, Default)]
pub(super) struct Refusals {
    window: Mutex<Window>,
    /// Threads running to log a window (changed under `Shared`'s `live`
    /// lock, with the thread count).
    pub reporters: AtomicUsize,
}

#[derive(Debug, Default)]
struct Window {
    /// Refusals counted since the last line.
    count: usize,
    /// The latest one's reason.
    reason: String,
    /// Someone will log this window when it ends.
    open: bool,
}

impl Refusals {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one refusal for `reason`; `true` when it opens a window,
    /// whose count the caller must [`log`](Self::log) when it ends.
    pub(super) fn count(&self, reason: &str) -> bool {
        let mut window = self.lock();
        window.count += 1;
        if window.reason != reason {
            window.reason = reason.to_string();
        }
        !std::mem::replace(&mut window.open, true)
    }

    /// Logs the window's count (if any) and closes it.
    pub(super) fn log(&self) {
        let (count, reason) = {
            let mut window = self.lock();
            window.open = false;
            (
                std::mem::take(&mut window.count),
                std::mem::take(&mut window.reason),
            )
        };
        if count > 0 {
            let connections = if count == 1 {
                "connection"
            } else {
                "connections"
            };
            warn!("refused {count} {connections} in the last second: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box where nothing binds but `vm.max_map_count` (the stock one of
    /// issue #25: 2 CPUs, 65530 mappings, 128 KiB stacks).
    fn stock() -> Readings {
        Readings {
            max_map_count: 65530,
            maps: 100,
            stack_bytes: 128 << 10,
            stack_cache_bytes: GLIBC_STACK_CACHE_BYTES,
            cpus: 2,
            threads_max: Some(192_739),
            pid_max: Some(4_194_304),
            system_threads: 200,
            nproc: Some(96_369),
            own_threads: 1,
            pids: None,
            nofile: Some(1 << 20),
            open_fds: 10,
            max_threads: None,
        }
    }

    #[test]
    fn the_map_count_counts_cached_stacks_arenas_and_headroom() {
        let b = budget(&stock());
        assert_eq!((b.limit, b.value), (Limit::MapCount, 65530));
        // 40 MiB of 132 KiB stacks: 310 cached (+1 over the line) at 2 maps.
        let cached = (40 << 20) / (132 << 10) + 1;
        let kept = 100 + MAP_HEADROOM + 32 + 2 * cached;
        assert_eq!(b.threads, (65530 - kept) / 4 - OWN_THREADS);
        // One thread per client, and one in 32 kept for writers.
        let above = b.threads - HTTP_SLACK;
        assert_eq!(b.clients(), above - above / 32);
        // A small budget still keeps room for a few writers.
        let small = Budget {
            threads: 64,
            limit: Limit::MaxThreads,
            value: 64,
        };
        assert_eq!(small.clients(), 64 - HTTP_SLACK - MIN_WRITERS);
        // Without the stack cache, more threads fit.
        let uncached = budget(&Readings {
            stack_cache_bytes: 0,
            ..stock()
        });
        assert_eq!(uncached.threads - b.threads, (2 * cached - 2) / 4);
    }

    #[test]
    fn each_limit_can_be_the_one_that_binds() {
        let cases: [(Readings, Limit, usize, usize); 6] = [
            (
                Readings {
                    threads_max: Some(5000),
                    system_threads: 1000,
                    ..stock()
                },
                Limit::ThreadsMax,
                5000,
                5000 - 1000 - OWN_THREADS,
            ),
            (
                Readings {
                    pid_max: Some(32768),
                    system_threads: 20_000,
                    ..stock()
                },
                Limit::PidMax,
                32768,
                32768 - 20_000 - RESERVED_PIDS - OWN_THREADS,
            ),
            (
                Readings {
                    nproc: Some(4096),
                    own_threads: 10,
                    ..stock()
                },
                Limit::Nproc,
                4096,
                4096 - 10 - OWN_THREADS,
            ),
            (
                Readings {
                    pids: Some((4915, 15)),
                    ..stock()
                },
                Limit::PidsMax,
                4915,
                4915 - 15 - OWN_THREADS,
            ),
            (
                Readings {
                    nofile: Some(1024),
                    open_fds: 12,
                    ..stock()
                },
                Limit::OpenFiles,
                1024,
                {
                    let clients = 1024 - 12 - OWN_FDS;
                    clients + (clients / 31).max(MIN_WRITERS) + HTTP_SLACK
                },
            ),
            (
                Readings {
                    max_threads: Some(64),
                    ..stock()
                },
                Limit::MaxThreads,
                64,
                64,
            ),
        ];
        for (readings, limit, value, threads) in cases {
            let b = budget(&readings);
            assert_eq!(
                (b.limit, b.value, b.threads),
                (limit, value, threads),
                "{readings:?}"
            );
        }
    }

    #[test]
    fn a_limit_already_used_up_leaves_nothing_and_never_underflows() {
        let b = budget(&Readings {
            max_map_count: 100,
            maps: 5000,
            ..stock()
        });
        assert_eq!((b.threads, b.limit, b.clients()), (0, Limit::MapCount, 0));
        let b = budget(&Readings {
            pids: Some((100, 400)),
            ..stock()
        });
        assert_eq!((b.threads, b.limit), (0, Limit::PidsMax));
    }

    #[test]
    fn the_line_names_the_limit_and_its_value() {
        let b = budget(&Readings {
            max_threads: Some(64),
            ..stock()
        });
        assert_eq!(
            b.to_string(),
            "thread budget 64: room for about 48 WebSocket clients (limited by --max-threads = 64)"
        );
    }

    #[test]
    fn what_proc_says_is_parsed() {
        assert_eq!(loadavg_threads("0.66 0.53 0.28 1/89 14938\n"), Some(89));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             96362                96362                processes \n\
                      Max open files            unlimited            unlimited            files     \n";
        assert_eq!(soft_limit(limits, "Max processes"), Some(96362));
        assert_eq!(soft_limit(limits, "Max open files"), None);
        let status =
            "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nThreads:\t7\nCapEff:\t0000000000000000\n";
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert!(!exempt_from_nproc(status));
        assert!(exempt_from_nproc(&status.replace("\t1000", "\t0")));
        assert!(exempt_from_nproc(&status.replace(
            "CapEff:\t0000000000000000",
            "CapEff:\t0000000001000000"
        )));
        assert_eq!(stack_cache_bytes(None), 40 << 20);
        let tunables = "glibc.malloc.arena_max=2:glibc.pthread.stack_cache_size=0x100000";
        assert_eq!(stack_cache_bytes(Some(tunables)), 1 << 20);
        assert_eq!(
            stack_cache_bytes(Some("glibc.pthread.stack_cache_size=0")),
            0
        );
    }

    #[test]
    fn refusals_are_counted_between_lines() {
        let refusals = Refusals::default();
        assert!(refusals.count("full"));
        assert!(!refusals.count("full"));
        assert!(!refusals.count("draining"));
        assert_eq!(refusals.lock().count, 3);
        refusals.log();
        assert_eq!(refusals.lock().count, 0);
        assert!(refusals.count("full"), "a new window opens after the line");
    }
}
