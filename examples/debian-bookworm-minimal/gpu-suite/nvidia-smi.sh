#!/bin/sh
# imageci-description: the host's GPUs are visible in the container (podman, CDI): nvidia-smi lists them
# imageci-needs: gpu
# imageci-testbeds: podman
# imageci-timeout: 60
set -e
nvidia-smi -L
nvidia-smi -L | grep -q '^GPU '
