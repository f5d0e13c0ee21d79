"""Methodology templates (jinja2, ``*.j2``), shipped as package data.

This package holds no code: ``framework.prompts`` locates the directory through
``importlib.resources`` so that rendering works from an installed wheel as well as a checkout.
"""
