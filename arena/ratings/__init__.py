"""From votes and verdicts to rankings: Bradley-Terry with intervals, style control, the leaderboard's figures."""
