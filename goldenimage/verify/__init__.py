"""The VM harness verify, audit and the e2e tests share: boot a throw-away clone of an artifact under QEMU
(vm), its first-boot seed and guest user (guest), and the cluster networks (l2switch, cluster_vms); and
`golden verify` itself (artifact: boot fresh clones, run the testinfra suites on each)."""
