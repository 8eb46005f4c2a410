//! A container's processes, from its cgroup (filled in below).
