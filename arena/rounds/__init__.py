"""A round of the arena: the same question to two models at once, timed, voted on and revealed."""
