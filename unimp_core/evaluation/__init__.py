"""Evaluation: pure metric functions (`metrics`, `text_metrics`) and the evaluate runner.

The metric modules import neither torch nor the model stack, so they can be used and tested alone.
"""
