"""Rulesets in the service: the pure language in `service.rules.language`; beside it the store
(`repository`), the lifecycle of versions (`lifecycle`), the per-process registry of live versions
(`registry`), the checks and dry runs in a child process (`trial`) and the command line (`cli`).
"""
