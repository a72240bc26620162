"""Integrations with other frameworks, each optional: importing one needs that framework."""
