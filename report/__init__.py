"""Offline reports built from saved probe results (result.json files): the AV-SUPERB leaderboard."""
