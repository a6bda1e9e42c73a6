"""Fault tests: "nothing lost, nothing sent twice, nobody let in", tried hard to break."""
