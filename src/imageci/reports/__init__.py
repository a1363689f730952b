"""What a run leaves for other tools: JUnit XML, TAP 13, and the reproducer script that re-runs it.
Imports ``engine``'s results and below."""
