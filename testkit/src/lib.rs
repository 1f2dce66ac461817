//! Test support shared by the workspace's tests (never part of the `rivetctl` binary).

pub mod apiserver;
pub mod dockerd;
pub mod kubelet;
pub mod proxmox;
pub mod registry;

/// Has the kernel send `signal` to the process `command` starts when the thread that starts
/// it ends (`PR_SET_PDEATHSIG`), so a server never outlives its test, even one that aborts;
/// a start whose parent is already gone fails instead of leaving an orphan.
pub(crate) fn die_with_parent(command: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec, makes only the
    // async-signal-safe prctl and getppid calls, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the signal was armed: nobody would ever stop us.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
