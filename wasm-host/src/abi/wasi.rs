//! A capability-free `wasi_snapshot_preview1` for wasm32-wasip1 filters: stdout/stderr go
//! to the log, clocks and randomness work, and there are no files, sockets, args or env.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::{read, write, write_u32};
use crate::state::HostState;

type C<'a> = Caller<'a, HostState>;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

pub(super) const FUNCTIONS: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "path_open",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "proc_exit",
    "sched_yield",
    "poll_oneoff",
];

/// `proc_exit`: ends the callback; the instance is discarded like after any trap.
#[derive(Debug, thiserror::Error)]
#[error("the filter called proc_exit({0})")]
pub(crate) struct Exit(pub(crate) i32);

/// Bytes a single `fd_write` logs at most, so a filter cannot make one huge log line.
const MAX_LINE: usize = 16 * 1024;

fn fd_write(mut c: C<'_>, fd: i32, iovs: i32, count: i32, nwritten: i32) -> i32 {
    if fd != 1 && fd != 2 {
        return EBADF;
    }
    let Ok(table) = read(&c, iovs, count.saturating_mul(8)) else {
        return EFAULT;
    };
    let mut text = Vec::new();
    let mut total: u32 = 0;
    for iov in table.chunks_exact(8) {
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Ok(bytes) = read(&c, ptr, len) else {
            return EFAULT;
        };
        total = total.saturating_add(bytes.len() as u32);
        let room = MAX_LINE.saturating_sub(text.len());
        text.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    let message = String::from_utf8_lossy(&text);
    let message = message.trim_end_matches('\n');
    if !message.is_empty() {
        // stdout is informational; stderr is where Rust panics and C errors go.
        super::misc::guest_log(&c.data().filter, if fd == 1 { 2 } else { 3 }, message);
    }
    match write_u32(&mut c, nwritten, total) {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

fn clock_time_get(mut c: C<'_>, clock: i32, _precision: i64, ret: i32) -> i32 {
    let nanos = match clock {
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        // Monotonic and CPU-time clocks: time since the process's first reading.
        1..=3 => {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_nanos()
        }
        _ => return EINVAL,
    };
    let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
    match write(&mut c, ret, &nanos.to_le_bytes()) {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

fn random_get(mut c: C<'_>, ptr: i32, len: i32) -> i32 {
    let len = len as u32 as usize;
    // Bounded so a bad length cannot make the host allocate gigabytes.
    if len > 1 << 20 {
        return EINVAL;
    }
    let mut buf = vec![0u8; len];
    fastrand::fill(&mut buf);
    match write(&mut c, ptr, &buf) {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

fn two_zeros(mut c: C<'_>, a: i32, b: i32) -> i32 {
    match write_u32(&mut c, a, 0).and_then(|()| write_u32(&mut c, b, 0)) {
        Ok(()) => SUCCESS,
        Err(_) => EFAULT,
    }
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = "wasi_snapshot_preview1";
    linker.func_wrap(m, "fd_write", fd_write)?;
    linker.func_wrap(
        m,
        "fd_read",
        |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _ret: i32| EBADF,
    )?;
    linker.func_wrap(m, "fd_close", |_c: C<'_>, _fd: i32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_c: C<'_>, _fd: i32, _off: i64, _whence: i32, _ret: i32| EBADF,
    )?;
    linker.func_wrap(m, "fd_fdstat_get", |_c: C<'_>, _fd: i32, _ret: i32| EBADF)?;
    // EBADF from fd 3 tells libc's start-up there are no preopened directories.
    linker.func_wrap(m, "fd_prestat_get", |_c: C<'_>, _fd: i32, _ret: i32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |_c: C<'_>,
         _fd: i32,
         _df: i32,
         _p: i32,
         _l: i32,
         _of: i32,
         _rb: i64,
         _ri: i64,
         _ff: i32,
         _ret: i32| EBADF,
    )?;
    linker.func_wrap(m, "clock_time_get", clock_time_get)?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut c: C<'_>, _clock: i32, ret: i32| match write(&mut c, ret, &1_000u64.to_le_bytes()) {
            Ok(()) => SUCCESS,
            Err(_) => EFAULT,
        },
    )?;
    linker.func_wrap(m, "random_get", random_get)?;
    linker.func_wrap(m, "environ_get", |_c: C<'_>, _a: i32, _b: i32| SUCCESS)?;
    linker.func_wrap(m, "environ_sizes_get", two_zeros)?;
    linker.func_wrap(m, "args_get", |_c: C<'_>, _a: i32, _b: i32| SUCCESS)?;
    linker.func_wrap(m, "args_sizes_get", two_zeros)?;
    linker.func_wrap(
        m,
        "proc_exit",
        |_c: C<'_>, code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(Exit(code))) },
    )?;
    linker.func_wrap(m, "sched_yield", |_c: C<'_>| SUCCESS)?;
    linker.func_wrap(
        m,
        "poll_oneoff",
        |_c: C<'_>, _i: i32, _o: i32, _n: i32, _ret: i32| ENOSYS,
    )?;
    Ok(())
}
