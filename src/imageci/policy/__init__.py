"""The rules, pure: the gate (evidence on exactly these bytes), promotion and pruning, flake
waivers, retention, vulnerability and compliance gates, the reference rule (regression, always-failed,
fixed, new) and bisection's search and failure signature. Each decides from facts passed in — no
catalog, no database — so each is read in one place and tested without one; ``app`` gathers the
facts and applies the decisions."""
