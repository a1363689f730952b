"""What people write: image definitions, suites and their files (DEP-8 control files,
container-structure-test YAML, testinfra modules, quarantine files, limits, durations),
loaded with ``file:line`` in every error. Imports the base modules only."""
