"""Tiers: lists of checks run against an adapted model, each returning a TierReport."""
