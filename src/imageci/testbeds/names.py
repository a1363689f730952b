"""A testbed's own ``/etc/hosts`` and ``/etc/hostname``, the way container runtimes give them.

A minbase root file system ships neither (hygiene: the build host's must not leak in), so without them
``localhost`` does not resolve and a test that starts a service on ``localhost`` fails where
autopkgtest, podman and docker pass. Like podman, the testbed's file starts from the image's own
``/etc/hosts`` (kept as it is) and adds what is missing: ``localhost`` on 127.0.0.1 and ::1, and the
testbed's host name. The image's bytes never change: container testbeds bind these files over the
image's, booted ones write them into the throwaway instance only where the image has none.
"""

from __future__ import annotations

HOSTS_PATH = "/etc/hosts"
HOSTNAME_PATH = "/etc/hostname"


def _names(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def hosts_text(hostname: str, image_hosts: str = "") -> str:
    """The testbed's ``/etc/hosts``: the image's lines, then whatever of ``localhost``, ``ip6-localhost``
    and ``hostname`` they do not already name."""
    known = _names(image_hosts)
    lines = [image_hosts.rstrip("\n")] if image_hosts.strip() else []
    if "localhost" not in known:
        lines += ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    elif "ip6-localhost" not in known:
        lines.append("::1\tip6-localhost ip6-loopback")
    if hostname not in known:
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


# For a booted testbed: write ``/etc/hosts`` and ``/etc/hostname`` only where the image has none (an image
# that ships them is tested as it ships), naming the host name the instance booted with.
PROVIDE_SCRIPT = (
    "h=$(cat /proc/sys/kernel/hostname); "
    f"[ -e {HOSTS_PATH} ] || [ -L {HOSTS_PATH} ] || "
    f"printf '127.0.0.1 localhost\\n::1 localhost ip6-localhost ip6-loopback\\n127.0.1.1 %s\\n' \"$h\" > {HOSTS_PATH}; "
    f"[ -e {HOSTNAME_PATH} ] || [ -L {HOSTNAME_PATH} ] || echo \"$h\" > {HOSTNAME_PATH}; true")
