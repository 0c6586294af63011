"""Connector tests on real loopback services."""
