"""Tests that need a host these machines are not: run by their own make targets."""
