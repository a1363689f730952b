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


def provide_script(hostname: str) -> str:
    """A shell script for a booted testbed: write ``/etc/hosts`` and ``/etc/hostname`` only where the
    image has none (an image that ships them is tested as it ships)."""
    hosts = hosts_text(hostname).replace("\t", " ")
    return (f"[ -e {HOSTS_PATH} ] || [ -L {HOSTS_PATH} ] || printf '%s' '{hosts}' > {HOSTS_PATH}; "
            f"[ -e {HOSTNAME_PATH} ] || [ -L {HOSTNAME_PATH} ] || echo '{hostname}' > {HOSTNAME_PATH}; true")
