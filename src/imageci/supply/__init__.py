"""What is in an image and what changed: package inventories (BOMs) read from a root file
system without running it, their SPDX and CycloneDX forms, and diffs between two versions."""
