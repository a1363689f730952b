"""What is in an image and what changed: package inventories (BOMs) read from a root file
system without running it, their SPDX and CycloneDX forms, diffs between two versions,
vulnerability feeds and their matching, OpenSCAP compliance, reproducibility reports, changelog
entries between two versions of a package.
Imports ``definitions`` and the base modules only."""
