//! Runtime inspection of real processes: each test starts a real runtime (installed by
//! `cargo xtask setup`) or a program it builds, waits until it runs, and inspects it through
//! odiglet's own code (`Inspector`, the `odiglet inspect` binary, cgroup resolution).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use odiglet::inspect::{Inspector, Language, Libc, RuntimeDetails, Stage};

use crate::support::{
    build,
    guards::ChildGuard,
    postgres::{as_user, server_command},
    runtimes::{self, find},
};

const READY: Duration = Duration::from_secs(20);

/// Starts `cmd`, waits until the process runs `exe` (and `maps_needle` is mapped, for
/// runtimes that load their engine as a library), and inspects it.
fn start_and_inspect(
    what: &str,
    cmd: &mut Command,
    exe: &Path,
    maps_needle: Option<&str>,
) -> (ChildGuard, RuntimeDetails) {
    let mut child = ChildGuard::spawn(what, cmd);
    let exe = fs::canonicalize(exe).expect("the executable exists");
    child.wait_until(READY, |pid| {
        // The exe link changes before the new arguments and environment are in place: wait
        // for both.
        let running = fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
            && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty());
        let mapped = maps_needle.is_none_or(|needle| {
            fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(needle))
        });
        running && mapped
    });
    let details = Inspector::new("/proc")
        .inspect(child.pid())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(details.pid, child.pid());
    assert_eq!(Path::new(&details.exe), exe, "{what}");
    (child, details)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("cannot create a tempdir")
}

// === interpreters ===

#[test]
fn python_by_name_version_from_name_and_env() {
    let Some(python) = find("python", &["/usr/bin/python3"]) else {
        return;
    };
    let sleep = ["-c", "import time; time.sleep(60)"];
    let (_child, details) =
        start_and_inspect("python", Command::new(&python).args(sleep), &python, None);
    assert_eq!(
        (details.language, details.stage),
        (Language::Python, Stage::Quick)
    );
    let from_name = details
        .runtime_version
        .expect("version from the executable name");
    assert!(from_name.starts_with("3."), "{from_name}");
    assert_eq!(details.libc, Some(Libc::Glibc));
    assert!(!details.secure_execution_mode);
    assert!(details.go.is_none());

    let mut cmd = Command::new(&python);
    cmd.args(sleep)
        .env("PYTHON_VERSION", "3.11.99")
        .env("LD_PRELOAD", "")
        .env("UNRELATED", "x");
    let (_child, details) = start_and_inspect("python with env", &mut cmd, &python, None);
    assert_eq!(details.runtime_version.as_deref(), Some("3.11.99"));
    assert_eq!(
        details.env.get("PYTHON_VERSION").map(String::as_str),
        Some("3.11.99")
    );
    assert!(details.env.contains_key("LD_PRELOAD"));
    assert!(!details.env.contains_key("UNRELATED") && !details.env.contains_key("PATH"));
}

#[test]
fn python_in_a_venv_and_renamed() {
    let Some(python) = find("python venv", &["/usr/bin/python3"]) else {
        return;
    };
    let dir = tempdir();
    let venv = dir.path().join("venv");
    let status = Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "python3 -m venv failed");
    let venv_python = venv.join("bin/python");
    let cmd = &mut Command::new(&venv_python);
    let (_child, details) = start_and_inspect(
        "venv python",
        cmd.args([
            "-c",
            "import sys, time; assert sys.prefix != sys.base_prefix; time.sleep(60)",
        ]),
        &venv_python,
        None,
    );
    assert_eq!(details.language, Language::Python);

    // A renamed interpreter: no name to go by, so the deep scan must recognize it.
    let renamed = dir.path().join("myservice");
    fs::copy(fs::canonicalize(&python).unwrap(), &renamed).unwrap();
    let mut cmd = Command::new(&renamed);
    cmd.args(["-c", "import time; time.sleep(60)"])
        .env("PYTHONHOME", "/usr");
    let (_child, details) = start_and_inspect("renamed python", &mut cmd, &renamed, None);
    assert_eq!(
        (details.language, details.stage),
        (Language::Python, Stage::Deep)
    );

    // The same interpreter with libstdc++ loaded: C++ loses the deep-scan tie.
    let load_cpp = "import ctypes, time; ctypes.CDLL('libstdc++.so.6'); time.sleep(60)";
    let mut cmd = Command::new(&renamed);
    cmd.args(["-c", load_cpp]).env("PYTHONHOME", "/usr");
    let (_child, details) = start_and_inspect(
        "renamed python + C++",
        &mut cmd,
        &renamed,
        Some("libstdc++"),
    );
    assert_eq!(
        (details.language, details.stage),
        (Language::Python, Stage::Deep)
    );
}

#[test]
fn node_with_version_from_env_and_an_agent() {
    let Some(node) = find("node", &["/usr/bin/node", "/usr/local/bin/node"]) else {
        return;
    };
    let mut cmd = Command::new(&node);
    cmd.args(["-e", "setTimeout(() => {}, 60000)"])
        .env("NODE_VERSION", "20.20.2")
        .env("DD_TRACE_AGENT_URL", "http://127.0.0.1:1");
    let (_child, details) = start_and_inspect("node", &mut cmd, &node, None);
    assert_eq!(details.language, Language::Javascript);
    assert_eq!(details.runtime_version.as_deref(), Some("20.20.2"));
    assert_eq!(details.other_agents, ["Datadog Agent"]);
}

#[test]
fn java_version_from_env_and_from_the_jdk() {
    let Some(java) = find("java", &["/usr/lib/jvm/java-17-openjdk-amd64/bin/java"]) else {
        return;
    };
    let dir = tempdir();
    let source = dir.path().join("Sleep.java");
    fs::write(&source, "class Sleep { public static void main(String[] a) throws Exception { Thread.sleep(60000); } }").unwrap();
    // A system property that names an agent jar: the command line gives the agent away.
    let mut cmd = Command::new(&java);
    cmd.arg("-Dagent=opentelemetry-javaagent.jar").arg(&source);
    let (_child, details) = start_and_inspect("java", &mut cmd, &java, Some("libjvm.so"));
    assert_eq!(details.language, Language::Java);
    let release = details
        .runtime_version
        .expect("version from the JDK release file");
    assert!(release.starts_with("17."), "{release}");
    assert_eq!(details.other_agents, ["OpenTelemetry Agent"]);

    let mut cmd = Command::new(&java);
    cmd.arg(&source).env("JAVA_VERSION", "17.0.15+6");
    let (_child, details) = start_and_inspect("java with env", &mut cmd, &java, Some("libjvm.so"));
    assert_eq!(details.runtime_version.as_deref(), Some("17.0.15+6"));
}

#[test]
fn ruby_and_php() {
    if let Some(ruby) = find("ruby", &["/usr/bin/ruby"]) {
        let real = fs::canonicalize(&ruby).unwrap();
        let (_child, details) = start_and_inspect(
            "ruby",
            Command::new(&ruby).args(["-e", "sleep 60"]),
            &real,
            Some("libruby"),
        );
        assert_eq!(details.language, Language::Ruby);
        let version = details
            .runtime_version
            .expect("version from the mapped libruby");
        assert!(version.starts_with("3."), "{version}");
    }
    if let Some(php) = find("php", &["/usr/bin/php"]) {
        let real = fs::canonicalize(&php).unwrap();
        let (_child, details) = start_and_inspect(
            "php",
            Command::new(&php).args(["-r", "sleep(60);"]),
            &real,
            None,
        );
        assert_eq!(details.language, Language::Php);
        // Taken from the binary: `X-Powered-By: PHP/x.y.z` in its read-only data.
        let version = details
            .runtime_version
            .expect("version from the php binary");
        assert!(version.starts_with("8."), "{version}");
    }
}

// === servers ===

#[test]
fn nginx_and_redis() {
    let dir = tempdir();
    if let Some(nginx) = find("nginx", &["/usr/sbin/nginx"]) {
        let conf = dir.path().join("nginx.conf");
        let socket = dir.path().join("nginx.sock");
        fs::write(
            &conf,
            format!(
                "daemon off; master_process off; pid {0}/nginx.pid; error_log stderr;\n\
             events {{}}\nhttp {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0};\n\
             fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n\
             server {{ listen unix:{1}; }} }}\n",
                dir.path().display(),
                socket.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
        let mut child = ChildGuard::spawn("nginx", &mut cmd);
        child.wait_until(READY, |_| socket.exists());
        let details = Inspector::new("/proc").inspect(child.pid()).unwrap();
        assert_eq!(details.language, Language::Nginx);
    }
    if let Some(redis) = find("redis", &["/usr/bin/redis-server"]) {
        let mut cmd = Command::new(&redis);
        // Port 0 disables TCP; without a socket redis would exit ("not listen anywhere").
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .arg("--unixsocket")
            .arg(dir.path().join("redis.sock"));
        let real = fs::canonicalize(&redis).unwrap();
        let (_child, details) = start_and_inspect("redis-server", &mut cmd, &real, None);
        assert_eq!(details.language, Language::Redis);
    }
}

#[test]
fn postgres_and_mariadb() {
    if !runtimes::root("postgres_and_mariadb") {
        return;
    }
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    if let Some(postgres) = find("postgres", &["/usr/lib/postgresql/15/bin/postgres"]) {
        let mut cmd = server_command(&postgres, dir.path());
        let (_child, details) = start_and_inspect("postgres", &mut cmd, &postgres, None);
        assert_eq!(details.language, Language::Postgres);
    }
    if let Some(mariadbd) = find("mariadbd", &["/usr/sbin/mariadbd"]) {
        let data = dir.path().join("mysql");
        fs::create_dir(&data).unwrap();
        let mut cmd = Command::new(&mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysql.sock").display()
            ))
            .args(["--skip-networking", "--skip-grant-tables", "--user=root"]);
        let (_child, details) = start_and_inspect("mariadbd", &mut cmd, &mariadbd, None);
        assert_eq!(details.language, Language::Mysql);
    }
}

// === compiled programs ===

const C_SLEEP: &str = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n";

#[test]
fn go_binaries_from_two_toolchains_with_and_without_symbols() {
    let go119 = find("go 1.19", &["/usr/lib/go-1.19/bin/go"]);
    let go_new = build::workspace_root().join("target/tools/go-1.25.5/bin/go");
    let go125 = find("go 1.25", &[go_new.to_str().unwrap()]);
    for (go, version) in [(go119, "1.19"), (go125, "1.25.5")] {
        let Some(go) = go else { continue };
        for stripped in [false, true] {
            let binary = build::go_program(&go, stripped);
            let what = format!("go {version} stripped={stripped}");
            let (_child, details) =
                start_and_inspect(&what, &mut Command::new(&binary), &binary, None);
            assert_eq!(
                (details.language, details.stage),
                (Language::Go, Stage::Quick),
                "{what}"
            );
            assert!(
                details
                    .runtime_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with(version)),
                "{what}: {details:?}"
            );
            assert_eq!(details.libc, Some(Libc::Static), "{what}: CGO_ENABLED=0");
            let go = details.go.expect("Go build info");
            assert!(
                go.version.starts_with(&format!("go{version}")),
                "{what}: {}",
                go.version
            );
            assert_eq!(go.main_module, "example.com/inspectme", "{what}");
            let dep = go.modules.iter().find(|m| m.path == "example.com/dep");
            assert_eq!(
                dep.map(|m| m.version.as_str()),
                Some("v1.2.3"),
                "{what}: {:?}",
                go.modules
            );
        }
    }
}

#[test]
fn cplusplus_rust_and_musl_programs() {
    if let Some(gxx) = find("g++", &["/usr/bin/g++"]) {
        let source = "#include <iostream>\n#include <unistd.h>\nint main() { std::cout << \"up\" << std::endl; for (;;) pause(); }\n";
        let binary = build::c_program("cplusplus", &gxx, "cc", source, &[]);
        let (_child, details) = start_and_inspect(
            "c++",
            &mut Command::new(&binary),
            &binary,
            Some("libstdc++"),
        );
        assert_eq!(
            (details.language, details.stage),
            (Language::Cplusplus, Stage::Deep)
        );
        assert_eq!(details.libc, Some(Libc::Glibc));
    }

    let binary = build::rust_program(
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }\n",
    );
    let (_child, details) = start_and_inspect("rust", &mut Command::new(&binary), &binary, None);
    assert_eq!(
        (details.language, details.stage),
        (Language::Rust, Stage::Deep)
    );
    // From the binary: the rustc commit in the standard library's paths, mapped to a release.
    let version = details
        .runtime_version
        .expect("rustc version from the binary");
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let rustc = String::from_utf8_lossy(&rustc.stdout).into_owned();
    assert!(rustc.contains(&version), "{version} not in {rustc}");

    if let Some(musl) = find("musl-gcc", &["/usr/bin/musl-gcc"]) {
        let binary = build::c_program("musl-static", &musl, "c", C_SLEEP, &["-static"]);
        let (_child, details) =
            start_and_inspect("musl static", &mut Command::new(&binary), &binary, None);
        assert_eq!(
            (details.language, details.libc),
            (Language::Unknown, Some(Libc::Static))
        );
        let binary = build::c_program("musl-dynamic", &musl, "c", C_SLEEP, &[]);
        let (_child, details) =
            start_and_inspect("musl dynamic", &mut Command::new(&binary), &binary, None);
        assert_eq!(
            (details.language, details.libc),
            (Language::Unknown, Some(Libc::Musl))
        );
    }
}

#[test]
fn setuid_program_runs_in_secure_execution_mode() {
    if !runtimes::root("setuid_program_runs_in_secure_execution_mode") {
        return;
    }
    let Some(gcc) = find("gcc", &["/usr/bin/gcc"]) else {
        return;
    };
    let built = build::c_program("c-sleep", &gcc, "c", C_SLEEP, &[]);
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let setuid: PathBuf = dir.path().join("setuid-sleep");
    fs::copy(&built, &setuid).unwrap();
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    let mut cmd = Command::new(&setuid);
    as_user(&mut cmd, "nobody");
    let (_child, details) = start_and_inspect("setuid", &mut cmd, &setuid, None);
    assert!(
        details.secure_execution_mode,
        "AT_SECURE must be set for a setuid exec"
    );
    let (_child, details) = start_and_inspect("plain", &mut Command::new(&built), &built, None);
    assert!(!details.secure_execution_mode);
}

// === the CLI contract ===

#[test]
fn cli_prints_the_json_contract_and_one_line_errors() {
    let Some(python) = find("cli", &["/usr/bin/python3"]) else {
        return;
    };
    let mut cmd = Command::new(&python);
    cmd.args(["-c", "import time; time.sleep(60)"])
        .env("PYTHON_VERSION", "3.11.4");
    let (child, _) = start_and_inspect("python for the CLI", &mut cmd, &python, None);
    let odiglet = env!("CARGO_BIN_EXE_odiglet");
    let out = Command::new(odiglet)
        .args(["inspect", "--json", "--pid", &child.pid().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "pid",
        "exe",
        "language",
        "runtime_version",
        "libc",
        "secure_execution_mode",
        "env",
        "other_agents",
        "go",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(json["pid"], child.pid());
    assert_eq!(json["language"], "python");
    assert_eq!(json["runtime_version"], "3.11.4");
    assert_eq!(json["libc"], "glibc");
    assert_eq!(json["secure_execution_mode"], false);
    assert_eq!(json["env"]["PYTHON_VERSION"], "3.11.4");
    assert_eq!(json["other_agents"], serde_json::json!([]));
    assert_eq!(json["go"], serde_json::Value::Null);

    let gone = Command::new(odiglet)
        .args(["inspect", "--pid", "999999999"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no such process: 999999999"), "{stderr}");
}

// === containers: PIDs from cgroups, then one answer per container ===
mod containers;
