//! A private PostgreSQL server for a test: a fresh data directory, no TCP (a Unix socket in
//! the same temporary directory), run as the `postgres` user. Stopped and removed on drop.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::Command,
    time::Duration,
};

use super::{guards::ChildGuard, runtimes};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs `cmd` as `user` (the databases refuse to run as root).
pub fn as_user<'a>(cmd: &'a mut Command, user: &str) -> &'a mut Command {
    let user = nix::unistd::User::from_name(user)
        .expect("cannot read the user database")
        .unwrap_or_else(|| panic!("no user {user}"));
    cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw())
}

/// Creates a cluster in `dir/pg` with `postgres`'s sibling `initdb`, and returns the command
/// that serves it as the `postgres` user: no TCP, its socket in `dir` (which that user must be
/// able to write).
pub fn server_command(postgres: &Path, dir: &Path) -> Command {
    let data = dir.join("pg");
    let init = as_user(
        &mut Command::new(postgres.with_file_name("initdb")),
        "postgres",
    )
    .args(["-A", "trust", "-N", "-U", "postgres", "-D"])
    .arg(&data)
    .output()
    .expect("cannot run initdb");
    assert!(
        init.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut cmd = Command::new(postgres);
    as_user(&mut cmd, "postgres")
        .arg("-D")
        .arg(&data)
        .args(["-c", "listen_addresses=", "-k"])
        .arg(dir);
    cmd
}

pub struct Postgres {
    // Field order: the server stops before its directory goes.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a server and waits until it accepts connections; `None` after a loud skip when
    /// PostgreSQL is not installed (a failure under `CI=true`). Needs root.
    pub fn start(test: &str) -> Option<Self> {
        let postgres = runtimes::find(test, &[&format!("{BIN}/postgres")])?;
        let dir = tempfile::tempdir().expect("cannot create a tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
            .expect("cannot open the tempdir to postgres");
        let mut cmd = server_command(&postgres, dir.path());
        cmd.args(["-c", "fsync=off"]);
        let mut child = ChildGuard::spawn("postgres", &mut cmd);
        let ready = format!("{BIN}/pg_isready");
        child.wait_until(Duration::from_secs(30), |_| {
            Command::new(&ready)
                .args(["-q", "-h"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success())
        });
        Some(Self { child, dir })
    }

    /// The socket directory, which libpq-style clients take as the host.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `lib/pq` connection string for the `postgres` database.
    pub fn dsn(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres sslmode=disable",
            self.socket_dir().display()
        )
    }

    pub fn assert_running(&mut self) {
        self.child.assert_running();
    }
}
