//! eBPF maps and programs this process holds, from `/proc/self/fd` and `fdinfo`: their count
//! and the kernel memory charged to each map (`memlock`). Odigos exports the same facts as
//! `bpf_*` metrics (odigos.md §7).

use std::{collections::BTreeMap, fs, path::Path};

/// Descriptors scanned at most; beyond this the process has bigger problems.
const MAX_FDS: usize = 65_536;

/// One map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub id: u32,
    /// The kernel's name for it (16 bytes at most), empty when unknown.
    pub name: String,
    pub map_type: u32,
    /// Bytes charged to the map (`memlock` in `fdinfo`).
    pub memlock: u64,
}

/// Maps (by id, each once however many descriptors point at it) and programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfUsage {
    pub maps: Vec<MapUsage>,
    pub programs: usize,
}

impl BpfUsage {
    pub fn total_map_memory(&self) -> u64 {
        self.maps.iter().map(|map| map.memlock).sum()
    }
}

/// Reads the usage of the process whose `/proc/<pid>` directory is `proc_dir`; map names come
/// from `name_of(id)`.
pub fn read(proc_dir: &Path, name_of: impl Fn(u32) -> Option<String>) -> BpfUsage {
    let Ok(entries) = fs::read_dir(proc_dir.join("fd")) else {
        return BpfUsage::default();
    };
    let mut maps = BTreeMap::new();
    let mut programs = BTreeMap::new();
    for entry in entries.filter_map(Result::ok).take(MAX_FDS) {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let kind = target.to_string_lossy();
        let is_map = kind == "anon_inode:bpf-map";
        if !is_map && kind != "anon_inode:bpf-prog" {
            continue;
        }
        let Ok(info) = fs::read_to_string(proc_dir.join("fdinfo").join(entry.file_name())) else {
            continue;
        };
        let fields = parse_fdinfo(&info);
        if is_map {
            let Some(id) = fields.get("map_id").and_then(|v| v.parse().ok()) else {
                continue;
            };
            maps.entry(id).or_insert_with(|| MapUsage {
                id,
                name: String::new(),
                map_type: fields
                    .get("map_type")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                memlock: fields
                    .get("memlock")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            });
        } else if let Some(id) = fields.get("prog_id") {
            programs.insert(id.to_string(), ());
        }
    }
    let maps = maps
        .into_values()
        .map(|mut map: MapUsage| {
            map.name = name_of(map.id).unwrap_or_default();
            map
        })
        .collect();
    BpfUsage {
        maps,
        programs: programs.len(),
    }
}

/// `key:\tvalue` lines.
fn parse_fdinfo(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect()
}

/// The kernel's name of map `id` (needs the privilege to open maps by id).
pub fn map_name(id: u32) -> Option<String> {
    let info = aya::maps::MapInfo::from_id(id).ok()?;
    info.name_as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn counts_each_map_once_and_sums_memlock() {
        let dir = tempfile::tempdir().unwrap();
        let (fd, fdinfo) = (dir.path().join("fd"), dir.path().join("fdinfo"));
        fs::create_dir_all(&fd).unwrap();
        fs::create_dir_all(&fdinfo).unwrap();
        let map = |n: &str, id: u32, memlock: u64| {
            symlink("anon_inode:bpf-map", fd.join(n)).unwrap();
            fs::write(
                fdinfo.join(n),
                format!("pos:\t0\nflags:\t02000002\nmap_type:\t27\nkey_size:\t0\nmemlock:\t{memlock}\nmap_id:\t{id}\n"),
            )
            .unwrap();
        };
        map("3", 10, 8_400_000);
        map("4", 11, 4096);
        map("5", 10, 8_400_000); // a second descriptor of map 10
        symlink("anon_inode:bpf-prog", fd.join("6")).unwrap();
        fs::write(fdinfo.join("6"), "prog_type:\t2\nprog_id:\t77\n").unwrap();
        symlink("/dev/null", fd.join("7")).unwrap();
        let usage = read(dir.path(), |id| (id == 10).then(|| "GO_SPANS".to_owned()));
        assert_eq!(usage.programs, 1);
        assert_eq!(usage.maps.len(), 2);
        assert_eq!(usage.total_map_memory(), 8_404_096);
        assert_eq!(usage.maps[0].name, "GO_SPANS");
        assert_eq!(usage.maps[0].map_type, 27);
        assert_eq!(usage.maps[1].name, "");
    }
}
