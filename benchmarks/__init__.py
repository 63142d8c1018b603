"""Benchmarks of the tagifai pipelines: ``python -m benchmarks.run [name ...]``.

Not tests: each benchmark prints a table and writes ``benchmarks/out/<name>.json`` (machine,
command, figures, targets with pass/fail) and ``benchmarks/out/<name>.png``.
"""
