"""critest specs not run here, each with the reason it cannot pass on this machine for *any* runtime.

Rules:
- Only reasons outside the runtime under test: containerd's own CRI behaviour on one version (BY_VERSION),
  no network to the outside, no pod network reachable from the host (the test CNI
  plugin keeps every pod's traffic inside its own namespace), images whose exact digests cannot be rebuilt,
  kernel features this machine lacks.  A spec that fails for pyshim but passes for runc is never listed.
- Keys are ginkgo ``--ginkgo.skip`` regular expressions matched against the full spec text; every key must
  match at least one spec of the critest version in use (tests/integration/test_cri_critest.py checks).
- Specs critest skips by itself (NRI without a socket, AppArmor off, image volumes, ...) are counted as
  skipped, not listed here.
"""

SKIPS: dict[str, str] = {
    r"Networking runtime should support networking runtime should support port mapping":
        "needs a pod network reachable from the host (CNI portmap + bridge); the test network is pod-local",
    r"Streaming runtime should support streaming interfaces runtime should support portforward":
        "port forwarding dials a web server in the pod from the host side; needs real nginx and pod network",
    r"Multiple Containers \[Conformance\] when running multiple containers in a pod should support network":
        "fetches httpd's page from the host over the pod network; the test network is pod-local",
    r"Image Manager public image with digest should be pulled and removed":
        "pins gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…, a digest no local build can have",
    r"Security Context bucket runtime should support MaskedPaths":
        "masks /bin/ls and expects 'sh -c ls' to fail; Debian's busybox-static runs applets inside sh "
        "(FEATURE_SH_STANDALONE) without looking at /bin/ls, so ls still runs (fails for runc alike)",
}

# containerd's CRI plugin itself, whatever the runtime: specs that fail on one containerd version only.
BY_VERSION: dict[str, dict[str, str]] = {
    "1.6.20": {
        r"Idempotence StopPodSandbox should not return an error if not found":
            "containerd 1.6's CRI answers NotFound for an unknown sandbox (idempotent from 1.7 on)",
        r"Idempotence StopContainer should not return an error if not found":
            "containerd 1.6's CRI answers NotFound for an unknown container (idempotent from 1.7 on)",
    },
}


def skips_for(version: str) -> list[str]:
    """The ``--ginkgo.skip`` expressions for a containerd version."""
    return [*SKIPS, *BY_VERSION.get(version, {})]


# Specs critest itself skips for the pyshim handler only, for a reason in containerd: from 2.0 on, CRI reports a
# handler's features (recursive read-only mounts, user namespaces) only for runtime_type io.containerd.runc.v2;
# for any other type it does not even ask the shim's -info (containerd 2.1.9 internal/cri/server/service.go
# introspectRuntimeFeatures).  critest then skips the rro specs ("runtime does not implement recursive readonly
# mounts") that runc.v2 passes.  Keyed by containerd major version.
NOT_INTROSPECTED: dict[int, tuple[str, ...]] = {
    2: (
        r"Container Mount Readonly runtime should support readonly mounts should support recursive readonly mounts",
        r"Container Mount Readonly runtime should support readonly mounts should reject a recursive readonly mount",
    ),
}
