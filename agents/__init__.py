"""Agents for proxy_env."""
