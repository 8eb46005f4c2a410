//! Which language runtime a process runs, by Odigos' two-stage rules (odigos.md §4.3): a quick
//! scan by executable name (plus Go build info), then, only if it found nothing, a deep scan of
//! mapped libraries, needed libraries and symbol names. Two languages in one stage are a
//! conflict, except that C++ loses to the other language.

use serde::Serialize;

use super::ProcessContext;

/// A language (or server) Odigos knows how to instrument. `unknown` is an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Go,
    Java,
    Python,
    Javascript,
    Dotnet,
    Ruby,
    Php,
    Rust,
    Cplusplus,
    Nginx,
    Mysql,
    Redis,
    Postgres,
    Unknown,
}

/// Every inspector, in the order they run.
const INSPECTED: [Language; 13] = [
    Language::Go,
    Language::Java,
    Language::Python,
    Language::Javascript,
    Language::Dotnet,
    Language::Ruby,
    Language::Php,
    Language::Rust,
    Language::Cplusplus,
    Language::Nginx,
    Language::Mysql,
    Language::Redis,
    Language::Postgres,
];

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Java => "java",
            Self::Python => "python",
            Self::Javascript => "javascript",
            Self::Dotnet => "dotnet",
            Self::Ruby => "ruby",
            Self::Php => "php",
            Self::Rust => "rust",
            Self::Cplusplus => "cplusplus",
            Self::Nginx => "nginx",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Unknown => "unknown",
        }
    }
}

/// Which stage decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Quick,
    Deep,
    /// Neither stage recognized the process.
    None,
}

/// The outcome of [`detect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    pub language: Language,
    pub runtime_version: Option<String>,
    pub stage: Stage,
    /// Languages that disagreed (the answer is then `unknown`).
    pub conflict: Vec<Language>,
}

/// Runs the quick scan, then the deep scan if the quick one found nothing.
pub fn detect(ctx: &ProcessContext) -> Detection {
    for (stage, scan) in [
        (Stage::Quick, quick_scan as ScanFn),
        (Stage::Deep, deep_scan),
    ] {
        let found: Vec<Language> = INSPECTED.into_iter().filter(|l| scan(*l, ctx)).collect();
        let language = match resolve(&found) {
            Ok(Some(language)) => language,
            Ok(None) => continue,
            Err(()) => {
                tracing::debug!(pid = ctx.pid, ?found, "language detection conflict");
                return Detection {
                    language: Language::Unknown,
                    runtime_version: None,
                    stage,
                    conflict: found,
                };
            }
        };
        let runtime_version = runtime_version(language, ctx);
        return Detection {
            language,
            runtime_version,
            stage,
            conflict: Vec::new(),
        };
    }
    Detection {
        language: Language::Unknown,
        runtime_version: None,
        stage: Stage::None,
        conflict: vec![],
    }
}

/// One language, or none; two where one is C++ give the other; anything else is a conflict.
fn resolve(found: &[Language]) -> Result<Option<Language>, ()> {
    match found {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        [a, b] if *a == Language::Cplusplus && *b != Language::Cplusplus => Ok(Some(*b)),
        [a, b] if *b == Language::Cplusplus && *a != Language::Cplusplus => Ok(Some(*a)),
        _ => Err(()),
    }
}

type ScanFn = fn(Language, &ProcessContext) -> bool;

fn quick_scan(language: Language, ctx: &ProcessContext) -> bool {
    let name = ctx.exe_name.as_str();
    match language {
        // `thrust` embeds Go build info but is not a Go program Odigos can instrument.
        Language::Go => name != "thrust" && ctx.buildinfo().is_some(),
        Language::Java => name == "java",
        Language::Python => is_python_name(name),
        Language::Javascript => matches!(name, "node" | "npm" | "npx" | "yarn"),
        Language::Dotnet => name == "dotnet",
        Language::Ruby => is_ruby_name(name),
        Language::Php => is_php_name(name),
        Language::Nginx => name == "nginx",
        // MariaDB's server binary is `mariadbd` (`mysqld` is a symlink to it).
        Language::Mysql => matches!(name, "mysqld" | "mariadbd"),
        // Debian's `redis-server` is a symlink to the multi-call `redis-check-rdb`: the exe
        // then names the wrong tool, but `comm` keeps the name it was started by.
        Language::Redis => {
            is_redis_name(name) || (name.starts_with("redis-check-") && is_redis_name(&ctx.comm()))
        }
        Language::Postgres => matches!(name, "postgres" | "postgresql" | "psql"),
        Language::Rust | Language::Cplusplus | Language::Unknown => false,
    }
}

fn deep_scan(language: Language, ctx: &ProcessContext) -> bool {
    match language {
        Language::Java => ctx.maps_contain("/libjvm.so"),
        Language::Dotnet => ctx.maps_contain("libcoreclr.so"),
        // A renamed interpreter: linked against libpython, or (static builds such as Debian's)
        // exporting the interpreter state every extension module links to.
        Language::Python => {
            ctx.needs_library("libpython3") || ctx.dynamic_strings_contain(b"_PyRuntime")
        }
        Language::Php => ctx
            .maps_paths()
            .any(|path| php_version_from_path(path).is_some()),
        Language::Ruby => ctx.maps_contain("libruby") || ctx.maps_contain("/ruby/"),
        Language::Rust => ctx.symbol_strings_contain(b"__rust_"),
        Language::Cplusplus => ctx.maps_contain("libstdc++.so") || ctx.maps_contain("libc++.so"),
        _ => false,
    }
}

fn runtime_version(language: Language, ctx: &ProcessContext) -> Option<String> {
    match language {
        Language::Go => ctx.buildinfo().and_then(|info| info.semver()),
        Language::Java => ctx
            .env("JAVA_VERSION")
            .and_then(java_version)
            .or_else(|| ctx.env("JAVA_HOME").and_then(jdk_version))
            .or_else(|| ctx.java_release_version()),
        Language::Python => ctx
            .env("PYTHON_VERSION")
            .map(str::to_owned)
            .or_else(|| after_prefix(&ctx.exe_name, "python"))
            .or_else(|| {
                ctx.image()
                    .and_then(|i| i.needed.iter().find_map(|n| after_prefix(n, "libpython")))
            }),
        Language::Javascript => ctx.env("NODE_VERSION").map(str::to_owned),
        Language::Php => ctx
            .env("PHP_VERSION")
            .map(str::to_owned)
            .or_else(|| ctx.rodata_version(b"X-Powered-By: PHP/"))
            .or_else(|| ctx.maps_paths().find_map(php_version_from_path)),
        Language::Ruby => ctx
            .env("RUBY_VERSION")
            .map(str::to_owned)
            .or_else(|| ctx.maps_paths().find_map(ruby_version_from_path)),
        Language::Rust => ctx.rustc_version(),
        _ => None,
    }
}

// === name and version patterns (hand-written: each is one small grammar) ===

/// A dotted number at the start of `s` (`3.11.7` in `3.11.7.so`), at least `x.y`.
fn dotted_prefix(s: &str) -> Option<String> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let version = s.get(..end)?.trim_end_matches('.');
    let parts: Vec<&str> = version.split('.').collect();
    (parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())).then(|| version.to_owned())
}

/// `3.11` from `python3.11` or `libpython3.11.so.1.0`.
fn after_prefix(name: &str, prefix: &str) -> Option<String> {
    dotted_prefix(name.strip_prefix(prefix)?)
}

fn is_redis_name(name: &str) -> bool {
    matches!(
        name,
        "redis" | "redis-server" | "redis-sentinel" | "redis-cli"
    )
}

/// `^python(\d+(\.\d+)?)?$`
fn is_python_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python") else {
        return false;
    };
    let mut parts = rest.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next();
    parts.next().is_none()
        && (rest.is_empty()
            || (!major.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.is_none_or(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))))
}

/// Ruby's launchers, optionally with a version suffix (`ruby3.1`).
fn is_ruby_name(name: &str) -> bool {
    const NAMES: [&str; 10] = [
        "ruby", "rails", "rake", "rackup", "puma", "unicorn", "gem", "bundler", "irb", "pry",
    ];
    NAMES.iter().any(|base| {
        name.strip_prefix(base)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    })
}

/// `^php(-cgi|-fpm)?[0-9.]*$`
fn is_php_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("php") else {
        return false;
    };
    let rest = rest
        .strip_prefix("-cgi")
        .or_else(|| rest.strip_prefix("-fpm"))
        .unwrap_or(rest);
    rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// PHP from a mapped path: `libphp8.2.so` (version `8.2`, or empty for `libphp.so`) or a
/// `/php/8.2/` or `/php8.2/` directory.
fn php_version_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next().unwrap_or(path);
    if let Some(rest) = file.strip_prefix("libphp") {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if rest.get(end..).is_some_and(|tail| tail.starts_with("so")) {
            return Some(
                rest.get(..end)
                    .unwrap_or_default()
                    .trim_end_matches('.')
                    .to_owned(),
            );
        }
    }
    path.match_indices("/php").find_map(|(at, _)| {
        let rest = path.get(at + 4..)?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let version = dotted_prefix(rest)?;
        rest.get(version.len()..)?
            .starts_with('/')
            .then_some(version)
    })
}

/// Ruby from a mapped path: `/ruby/3.1.0/` or `libruby.so.3.1.2` / `libruby-3.1.so.3.1`.
fn ruby_version_from_path(path: &str) -> Option<String> {
    if let Some(at) = path.find("/ruby/") {
        let rest = path.get(at + 6..)?;
        if let Some(version) = dotted_prefix(rest)
            && rest.get(version.len()..)?.starts_with('/')
        {
            return Some(version);
        }
    }
    let file = path.rsplit('/').next()?;
    let rest = file.strip_prefix("libruby")?;
    let rest = rest
        .strip_prefix('-')
        .or_else(|| rest.strip_prefix(".so."))
        .unwrap_or(rest);
    dotted_prefix(rest)
}

/// `JAVA_VERSION` matching `\d+\.\d+\.\d+(\.\d+)?\+\d+` (e.g. `17.0.2+8`), as found in it.
fn java_version(value: &str) -> Option<String> {
    value
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .find_map(|(start, _)| {
            let rest = value.get(start..)?;
            let version = dotted_prefix(rest)?;
            let parts = version.split('.').count();
            let build = rest.get(version.len()..)?.strip_prefix('+')?;
            let digits = build
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(build.len());
            ((3..=4).contains(&parts) && digits > 0)
                .then(|| format!("{version}+{}", build.get(..digits).unwrap_or_default()))
        })
}

/// `jdk(\d+(\.\d+)*)` in `JAVA_HOME` (e.g. `/opt/jdk17.0.2`).
fn jdk_version(home: &str) -> Option<String> {
    home.match_indices("jdk").find_map(|(at, _)| {
        let rest = home.get(at + 3..)?;
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let version = rest.get(..end)?.trim_end_matches('.');
        version
            .starts_with(|c: char| c.is_ascii_digit())
            .then(|| version.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cplusplus_loses_ties_and_other_pairs_conflict() {
        use Language::*;
        assert_eq!(resolve(&[]), Ok(None));
        assert_eq!(resolve(&[Rust]), Ok(Some(Rust)));
        assert_eq!(resolve(&[Cplusplus, Python]), Ok(Some(Python)));
        assert_eq!(resolve(&[Ruby, Cplusplus]), Ok(Some(Ruby)));
        assert_eq!(resolve(&[Go, Javascript]), Err(()));
        assert_eq!(resolve(&[Rust, Python, Cplusplus]), Err(()));
    }

    #[test]
    fn executable_names() {
        for yes in ["python", "python3", "python3.11"] {
            assert!(is_python_name(yes), "{yes}");
        }
        for no in [
            "python3.11.7",
            "pythonx",
            "python.",
            "python3.",
            "mypython",
            "ipython",
        ] {
            assert!(!is_python_name(no), "{no}");
        }
        for yes in ["php", "php8.2", "php-fpm", "php-fpm8.2", "php-cgi"] {
            assert!(is_php_name(yes), "{yes}");
        }
        assert!(!is_php_name("phpunit"));
        for yes in ["ruby", "ruby3.1", "puma", "bundler", "irb"] {
            assert!(is_ruby_name(yes), "{yes}");
        }
        assert!(!is_ruby_name("rubyx") && !is_ruby_name("gems"));
    }

    #[test]
    fn versions_from_env_names_and_paths() {
        assert_eq!(java_version("17.0.2+8").as_deref(), Some("17.0.2+8"));
        assert_eq!(
            java_version("jdk-21.0.1.1+12-LTS").as_deref(),
            Some("21.0.1.1+12")
        );
        assert_eq!(java_version("17"), None);
        assert_eq!(
            jdk_version("/opt/java/jdk17.0.2").as_deref(),
            Some("17.0.2")
        );
        assert_eq!(jdk_version("/usr/lib/jvm/java-17-openjdk-amd64"), None);
        assert_eq!(
            after_prefix("python3.11", "python").as_deref(),
            Some("3.11")
        );
        assert_eq!(after_prefix("python3", "python"), None);
        assert_eq!(
            after_prefix("libpython3.11.so.1.0", "libpython").as_deref(),
            Some("3.11")
        );
        assert_eq!(
            php_version_from_path("/usr/lib/libphp8.2.so").as_deref(),
            Some("8.2")
        );
        assert_eq!(
            php_version_from_path("/usr/lib/libphp.so").as_deref(),
            Some("")
        );
        assert_eq!(
            php_version_from_path("/usr/lib/php/8.2/x.so").as_deref(),
            Some("8.2")
        );
        assert_eq!(
            php_version_from_path("/usr/lib/php/20220829/opcache.so").as_deref(),
            None
        );
        assert_eq!(php_version_from_path("/usr/lib/libc.so.6"), None);
        let ruby = "/usr/lib/x86_64-linux-gnu/ruby/3.1.0/enc/encdb.so";
        assert_eq!(ruby_version_from_path(ruby).as_deref(), Some("3.1.0"));
        let libruby = "/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1";
        assert_eq!(ruby_version_from_path(libruby).as_deref(), Some("3.1"));
        assert_eq!(
            ruby_version_from_path("/opt/libruby.so.3.2.2").as_deref(),
            Some("3.2.2")
        );
    }
}
