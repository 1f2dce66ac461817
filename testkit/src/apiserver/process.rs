//! The server's child processes: started so that they die with the test process (even one
//! killed with SIGKILL), logged to files, stopped with SIGTERM and then SIGKILL.

use std::{
    env, fs, io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::Failure;

/// How long a process has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child process and its log (stdout and stderr).
#[derive(Debug)]
pub(super) struct Process {
    pub(super) name: &'static str,
    pub(super) child: Child,
    log: PathBuf,
}

impl Process {
    /// What its exit means for the start.
    pub(super) fn exited(&self, status: ExitStatus) -> Failure {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if log.contains("address already in use") {
            Failure::PortTaken { process: self.name }
        } else {
            Failure::Broken(format!("{} exited ({status}) before the server was ready", self.name))
        }
    }

    /// SIGTERM to its process group, SIGKILL after [`STOP_GRACE`]; reaps it.
    pub(super) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // Not reaped yet, so the pid (its process group's id) is still its own.
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let give_up = Instant::now() + STOP_GRACE;
        while Instant::now() < give_up {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Starts `program` in `dir`, logging to `dir/NAME.log`, so that it dies with this process.
pub(super) fn spawn(name: &'static str, program: &Path, args: &[String], dir: &Path) -> Result<Process, Failure> {
    let log = dir.join(format!("{name}.log"));
    let file =
        fs::File::create(&log).map_err(|err| Failure::Broken(format!("cannot create {}: {err}", log.display())))?;
    let stderr = file.try_clone().map_err(|err| Failure::Broken(format!("cannot share {}: {err}", log.display())))?;
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(file).stderr(stderr).process_group(0);
    // etcd takes its flags from ETCD_* too, and refuses unknown ones.
    for (key, _) in env::vars_os().filter(|(key, _)| key.to_string_lossy().starts_with("ETCD_")) {
        command.env_remove(key);
    }
    crate::die_with_parent(&mut command, libc::SIGKILL);
    let child = spawn_from_immortal_thread(command)
        .map_err(|err| Failure::Broken(format!("cannot start {}: {err}", program.display())))?;
    Ok(Process { name, child, log })
}

/// Spawns `command` from a thread that lives as long as the process: the kernel sends
/// PR_SET_PDEATHSIG when the *thread* that forked exits, and the caller's thread (a test's, a
/// tokio blocking thread) may end long before the server is dropped.
fn spawn_from_immortal_thread(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("apiserver-spawner".into())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("ApiServer::start: cannot start the spawner thread");
        sender
    });
    let (reply, spawned) = mpsc::channel();
    spawner.send((command, reply)).expect("the spawner thread never exits");
    spawned.recv().expect("the spawner thread always replies")
}
