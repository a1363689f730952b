"""Test kinds: scripts, DEP-8 (autopkgtest's format), container-structure-test YAML, testinfra
modules, consumers' suites and the built-in checks (boot, hygiene, cloud machines). Each runs on
any ``testbeds.base.Testbed`` and never knows which backend it is. Imports ``testbeds``,
``formats``, ``definitions`` and below."""
