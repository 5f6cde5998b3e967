"""Orchestration: what a user types. The ``fusion`` console script (:mod:`fusion.cli`), the stack supervisor
(:mod:`fusion.stack`) and the one-machine demo (:mod:`fusion.demo`).

``fusion`` sits at the top: it may import every package; no package imports it (only tests do).
"""
