"""The seed query: KQL string semantics, the alias profiles, the legs and the summary."""
