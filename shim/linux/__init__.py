"""Linux system helpers of the library: mounts, mountinfo, cgroup membership, the C library handle."""
