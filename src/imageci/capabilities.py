"""The capability words testbeds offer and tests need (shared vocabulary).

A test's ``needs`` that its testbed does not offer make it a skip with the
missing words as the reason; a word no testbed knows is almost always a typo,
so suite loading warns about it (``file:line``).
"""

from __future__ import annotations

ROOT = "root"  # commands run as uid 0 inside the testbed
REVERT = "revert"  # revert() is cheap (copy-on-write)
NETWORK = "network"  # may reach the outside network when a test asks
ARCHIVE = "archive"  # may reach the image's configured apt archive, and nothing else (DEP-8 tests)
LIMITS = "limits"  # memory, pids and disk limits are enforced
PRISTINE = "pristine"  # the image's files as built: no init has run yet
PRIVILEGED = "privileged"  # opt out of the default hardening (all capabilities, no seccomp, writable /proc/sys)
ISOLATION_CONTAINER = "isolation-container"  # own process tree with an init (services can start)
ISOLATION_MACHINE = "isolation-machine"  # a whole machine (kernel, boot)
REBOOT = "reboot"  # reboot() and power_off(): the machine restarts or stops through its firmware
CLOUD_INIT = "cloud-init"  # the testbed hands the guest a cloud-init seed (its SSH key, network, user-data)
IPV6 = "ipv6"  # the testbed's network offers IPv6
KVM = "kvm"
GPU = "gpu"
ARCH_PREFIX = "arch:"  # arch:<debian architecture>

AUTO = "auto"  # a testbed word: each test on the lightest testbed of this host that offers what it needs
LIGHTEST = ("sandbox", "podman", "lxd", "qemu")  # what ``auto`` tries, lightest first

KNOWN = frozenset({ROOT, REVERT, NETWORK, ARCHIVE, LIMITS, PRISTINE, PRIVILEGED, ISOLATION_CONTAINER, ISOLATION_MACHINE,
                   REBOOT, CLOUD_INIT, IPV6, KVM, GPU})


def access(needs: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """What a testbed made for ``needs`` may reach, decided here once for every backend:
    ``network`` (the outside network), ``archive`` (the image's apt archive and nothing else)
    or ``none`` (loopback only)."""
    if NETWORK in needs:
        return NETWORK
    return ARCHIVE if ARCHIVE in needs else "none"


def arch(architecture: str) -> str:
    return f"{ARCH_PREFIX}{architecture}"


def is_known(word: str) -> bool:
    return word in KNOWN or (word.startswith(ARCH_PREFIX) and len(word) > len(ARCH_PREFIX))
