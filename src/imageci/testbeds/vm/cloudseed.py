"""The cloud-init NoCloud seed a disk image boots with: how the run's SSH key
reaches a cloud image with no imageci code in it.

The seed is a small FAT disk labelled ``cidata`` (cloud-init's NoCloud
datasource looks for a filesystem with that label, ISO 9660 or VFAT) made
without mounting (``mkfs.fat`` and mtools), attached read-only. It holds
``meta-data`` (an instance id for this run and the hostname) and
``user-data``, a ``#cloud-config`` that

- authorises the run's public key for root (``disable_root: false``: the key
  is installed without the "log in as the default user" wrapper) and for the
  image's default user, with password logins off;
- sets the hostname ``imageci-<run>`` and writes ``/var/lib/imageci/seed``
  holding the run's nonce, so the ``cloud-init-done`` check can tell that
  the user-data imageci sent was the one applied.

and ``network-config`` (version 2) for the VM's interface, matched by its
MAC address: DHCP for the address, as clouds do, plus what the restricted
user-mode network's DHCP leaves out — the default route (via ``10.0.2.2``,
where nothing outside is reachable) and the name server ``10.0.2.100``
(``testbeds.guestdns``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from imageci.errors import TestbedError
from imageci.hosttools import host_tool
from imageci.testbeds.base import CloudSeed
from imageci.testbeds.vm import guestdns
from imageci.testbeds.vm.guestdns import GUEST_SERVER

SEED_FILE = "/var/lib/imageci/seed"
HOST_ADDRESS = "10.0.2.2"  # the host on the user-mode network: the default route's gateway
SEARCH_DOMAIN = "imageci.test"
MAC = "52:54:00:12:34:56"  # the VM's network interface (testbeds.vm gives it this address)
SEED_SIZE_KIB = 1024


@dataclass(frozen=True)
class Seed:
    path: Path  # the FAT image
    instance_id: str
    hostname: str
    nonce: str

    def facts(self) -> CloudSeed:
        """What the guest was told, for the checks that hold it to it."""
        return CloudSeed(self.instance_id, self.hostname, SEED_FILE, self.nonce, guestdns.NAME.rstrip("."),
                         guestdns.ADDRESS)




def user_data(public_key: str, hostname: str, nonce: str) -> str:
    doc = {
        "hostname": hostname,
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_authorized_keys": [public_key],
        "write_files": [{"path": SEED_FILE, "content": nonce + "\n", "permissions": "0644"}],
    }
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=True)


def network_config() -> str:
    doc = {"version": 2, "ethernets": {"primary": {
        "match": {"macaddress": MAC}, "dhcp4": True,
        "routes": [{"to": "0.0.0.0/0", "via": HOST_ADDRESS}],
        "nameservers": {"addresses": [GUEST_SERVER], "search": [SEARCH_DOMAIN]}}}}
    return yaml.safe_dump(doc, sort_keys=True)


def make_seed(directory: Path, public_key: str, token: str) -> Seed:
    """The NoCloud seed of one run (``token`` names it) in ``directory``."""
    hostname = f"imageci-{token[:12]}"
    nonce = os.urandom(8).hex()
    seed = Seed(directory / "cidata.img", f"imageci-{token}-{nonce[:8]}", hostname, nonce)
    files = {"meta-data": yaml.safe_dump({"instance-id": seed.instance_id, "local-hostname": hostname}),
             "user-data": user_data(public_key, hostname, nonce), "network-config": network_config()}
    src = directory / "cidata"
    src.mkdir(exist_ok=True)
    for name, text in files.items():
        (src / name).write_text(text)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for argv in ([host_tool("mkfs.fat", "dosfstools"), "-C", "-n", "CIDATA", str(seed.path), str(SEED_SIZE_KIB)],
                 [host_tool("mcopy", "mtools"), "-i", str(seed.path), *(str(src / n) for n in files), "::/"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise TestbedError(f"making the cloud-init seed failed: {done.stderr.strip()[-300:]}")
    shutil.rmtree(src)
    return seed
