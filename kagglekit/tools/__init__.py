"""Tools that read run folders: report (leaderboard, plots) and doctor (pre-flight checks)."""
